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
    shipped spec with checkpoint selection, seeds 0 and 1; h: f with normal_weight 16."""
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
    for name, spec in out.items():
        spec["name"] = f"exp-{name}"
    return out


def main() -> None:
    base = yaml.safe_load((EXAMPLES / "harmful-smollm2.yaml").read_text(encoding="utf-8"))
    for name, spec in variants(base).items():
        path = EXAMPLES / f"_exp_{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        print(path)


if __name__ == "__main__":
    main()
