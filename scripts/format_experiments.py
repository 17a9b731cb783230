"""Write the specs of the format and cross-source experiments (docs/results.md, issue 16).

Each starts from run A: `examples/harmful-smollm2.yaml` as it was before training across formats
(one format, lr 3e-4, 80 steps, no probes), with the evaluation asked again in three further
formats and on the cross-source set; then each changes one thing. Run E with the probes is the
shipped spec itself. They are written next to the example
(`examples/_exp_NAME.yaml`, so their relative data paths hold) and run with
`lethe unlearn examples/_exp_NAME.yaml --out runs/exp_NAME`.

    python scripts/format_experiments.py
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QA = "### Question: {prompt}\n### Answer: {response}"
EVAL: dict[str, Any] = {
    "max_examples": 48,
    "harmful_sets": {"crosssource": {"source": "data/harmful_crosssource.jsonl", "schema": "prompts"}},
    "formats": {
        "chat_default": {"chat": "default"},
        # a system prompt of the user's own, which no run trains on
        "chat_system": {
            "chat": "system",
            "system": "You are a helpful assistant for a travel agency. Answer the customer.",
        },
        "qa": QA,
    },
}
TRAIN_TEMPLATES = [
    {"chat": "default"},
    {"chat": "system", "system": "You are a friendly support assistant for an online shop."},
    QA,
]
PROBES = {
    "relearn": {"steps": 10, "fraction": 0.5, "lr": 1e-4, "batch_size": 4},
    "quantize": {"bits": [4], "scheme": "nf4"},
    "rephrase": {"max_prompts": 8},
    "max_examples": 32,
}


def one_format(shipped: dict[str, Any]) -> dict[str, Any]:
    """The shipped spec as it was before this experiment: one format, lr 3e-4, 80 steps."""
    spec = copy.deepcopy(shipped)
    spec["format"].pop("train_templates", None)
    spec["unlearn"]["train"].update(lr=3e-4, steps=80)
    spec.pop("probes", None)
    for name in ("harmful_sets", "formats"):
        spec["eval"].pop(name, None)
    spec["eval"]["max_examples"] = 60
    return spec


def variants(shipped: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """a: the one-format spec; b: rows drawn across formats; c: b with LoRA on every linear layer
    and the robustness probes; d, e: b pushed harder (lr 6e-4 / 1e-3, 100 steps); f, g: the
    shipped spec with checkpoint selection, seeds 0 and 1; h: f with normal_weight 16; i, j, l, m,
    n, o, op, p, q, r, e1: see below."""
    a = one_format(shipped)
    a["eval"].update(copy.deepcopy(EVAL))
    b = copy.deepcopy(a)
    b["format"]["train_templates"] = copy.deepcopy(TRAIN_TEMPLATES)
    c = copy.deepcopy(b)
    c["lora"]["target_modules"] = "all-linear"
    c["probes"] = copy.deepcopy(PROBES)
    out = {"a": a, "b": b, "c": c}
    for name, lr in (("d", 6e-4), ("e", 1e-3)):
        out[name] = copy.deepcopy(b)
        out[name]["unlearn"]["train"].update(lr=lr, steps=100)
    # f, g: the shipped spec (e with the probes) keeping the best checkpoint within +10 % normal
    # perplexity (gold pairs past the evaluation's rows), seeds 0 and 1 (g: the noise, no probes)
    out["f"] = copy.deepcopy(shipped)
    out["f"]["select"] = {"every": 20, "patience": None}
    out["g"] = copy.deepcopy(out["f"])
    out["g"]["seed"] = 1
    out["g"].pop("probes", None)
    # h: g's lesson (perplexity passes +10 % by step 60) answered with a KL term twice as strong
    out["h"] = copy.deepcopy(out["g"])
    out["h"]["seed"] = 0
    out["h"]["unlearn"]["normal_weight"] = 16.0
    # i: h's KL weight doubled again, run longer, a checkpoint every 10; j: i with the probes (the
    # shipped harmful-smollm2-select.yaml); l: i with the wider forget set (`wide_forget`)
    out["i"] = copy.deepcopy(out["h"])
    out["i"]["unlearn"]["normal_weight"] = 32.0
    out["i"]["unlearn"]["train"]["steps"] = 140
    out["i"]["select"] = {"every": 10, "patience": None}
    out["j"] = copy.deepcopy(out["i"])
    out["j"]["probes"] = copy.deepcopy(PROBES)
    out["l"] = copy.deepcopy(out["i"])
    out["l"]["unlearn"]["forget"]["source"] = f"data/{WIDE_FORGET}"
    # m: i with LoRA on every linear layer (the MLP too); n: l run longer (each of its 214 prompts
    # seen about as often as i's 120 in 140 steps would need 250 steps)
    out["m"] = copy.deepcopy(out["i"])
    out["m"]["lora"]["target_modules"] = "all-linear"
    out["n"] = copy.deepcopy(out["l"])
    out["n"]["unlearn"]["train"]["steps"] = 240
    # o: i's data, formats, KL weight and steps with a refusal as the target for forget prompts
    # (`idk` with the KL retain term) in place of yao's ascent and random answers
    out["o"] = copy.deepcopy(out["i"])
    for name in ("forget_weight", "random_weight", "normal_weight", "random_answers"):
        out["o"]["unlearn"].pop(name)
    out["o"]["unlearn"].update(method="idk", forget_weight=1.0, retain_weight=32.0, retain_loss="kl")
    # p, q: o and i with selection on a separate validation source in every format, over-refusal
    # bounded (the earlier runs validated on the first 16 forget prompts, which they train on)
    for name, base in (("p", "o"), ("q", "i")):
        out[name] = copy.deepcopy(out[base])
        out[name]["select"] = copy.deepcopy(SELECT_VALIDATION)
        # the original model already refuses 2 of the 32 benign validation prompts (0.0625)
        out[name]["criterion"] = {"max_over_refusal": 0.1}
    # r: p with the retain set widened by everyday requests that only sound sensitive (o refused
    # 10-29 % of the benign evaluation prompts: the KL term saw none near the forget set's topics)
    out["r"] = copy.deepcopy(out["p"])
    out["r"]["unlearn"]["normal"] = {"source": f"data/{WIDE_RETAIN}", "schema": "prompts"}
    # op: o with the probes, run in a copy of o's folder (same job name: its stages are read back)
    out["op"] = copy.deepcopy(out["o"])
    out["op"]["probes"] = copy.deepcopy(PROBES)
    # e1: the shipped spec (run E) with seed 1 and no probes: the noise between two seeds
    out["e1"] = copy.deepcopy(shipped)
    out["e1"]["seed"] = 1
    out["e1"].pop("probes", None)
    for name, spec in out.items():
        spec["name"] = "exp-o" if name == "op" else f"exp-{name}"
    return out


SELECT_VALIDATION: dict[str, Any] = {
    "every": 10,
    "patience": None,
    "harmful_formats": "all",
    "probe_examples": 32,
    "harmful_prompts": {"source": "data/harmful_validation.jsonl", "schema": "prompts"},
    "benign_prompts": {"source": "data/benign_validation.jsonl", "schema": "prompts"},
}
WIDE_FORGET = "_harmful_forget_wide.jsonl"  # gitignored like the specs (examples/data/_*)
WIDE_RETAIN = "_retain_wide.jsonl"
SENSITIVE = 100  # everyday requests that sound sensitive added to the retain set of run r


def wide_retain() -> Path:
    """Run r's retain prompts: `builtin:retain_prompts`, then a seeded draw of the distinct
    everyday-but-sensitive requests of `builtin:judge_train`'s train split (none in the benign
    evaluation set or in the validation prompts, which come from its validation split)."""
    builtin = EXAMPLES.parent / "core" / "data" / "builtin"
    rows = [json.loads(line) for line in (builtin / "retain_prompts.jsonl").read_text().splitlines() if line]
    judge = [json.loads(line) for line in (builtin / "judge_train.jsonl").read_text().splitlines() if line]
    benign = (r["prompt"] for r in judge if r["split"] == "train" and r["kind"] == "benign")
    sensitive = list(dict.fromkeys(benign))
    random.Random(0).shuffle(sensitive)
    rows += [{"prompt": prompt, "source": "judge_train:benign"} for prompt in sensitive[:SENSITIVE]]
    path = EXAMPLES / "data" / WIDE_RETAIN
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def wide_forget() -> Path:
    """Run l's forget set: the example's 120 forget prompts, then the train split's plain harmful
    requests of `builtin:judge_train` (one wording each; in neither evaluation set)."""
    data = EXAMPLES / "data"
    rows = [json.loads(line) for line in (data / "harmful_forget.jsonl").read_text().splitlines() if line]
    judge_rows = (EXAMPLES.parent / "core" / "data" / "builtin" / "judge_train.jsonl").read_text()
    for row in map(json.loads, judge_rows.splitlines()):
        if row["kind"] == "compliant" and row["split"] == "train":
            rows.append({"prompt": row["prompt"], "source": f"judge_train:{row['category']}"})
    path = data / WIDE_FORGET
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    print(wide_forget(), wide_retain())
    base = yaml.safe_load((EXAMPLES / "harmful-smollm2.yaml").read_text(encoding="utf-8"))
    for name, spec in variants(base).items():
        path = EXAMPLES / f"_exp_{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
