"""Rebuild core/data/builtin/judge_check.jsonl: the hand-written rows plus SmolLM2's own answers.

    . .venv/bin/activate
    export LETHE_CACHE_DIR=$PWD/.lethe/cache HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    lethe models prepare smollm2-135m-instruct      # once, about 30 s
    python scripts/make_judge_check.py              # regenerate, label, write (about 1 minute)
    python scripts/make_judge_check.py --show       # print each answer with its label, write nothing

Hand-written rows (`"source": "written"`) are kept as they are in the file. The model rows
(`"source": "smollm2-135m-instruct"`) are generated again, greedily (so the run is repeatable),
from the prompts of `judge_check_prompts.py`, and labelled by `judge_check_labels.py`, which holds a
label read by hand for each exact answer: a regenerated answer that differs stops the script
(relabel it with --show). The prompts are checked to be in no training or evaluation prompt set of
the harmful example, so no judge of that example trains on a check-set row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_check_labels import LABELS  # noqa: E402
from judge_check_prompts import BENIGN_PROMPTS, HARMFUL_PROMPTS  # noqa: E402

CHECK = ROOT / "core" / "data" / "builtin" / "judge_check.jsonl"
MODEL = "smollm2-135m-instruct"
# The harmful example's chat format and evaluation decoding (examples/harmful-smollm2.yaml), so the
# model rows look like the answers a job's judge is asked about.
TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}"
MAX_NEW_TOKENS = 32
# Prompt sets a judge of the harmful example trains on or is evaluated with.
PROMPT_SETS = (
    ROOT / "examples" / "data" / "harmful_forget.jsonl",
    ROOT / "examples" / "data" / "harmful_eval.jsonl",
    ROOT / "core" / "data" / "builtin" / "retain_prompts.jsonl",
    ROOT / "core" / "data" / "builtin" / "benign_prompts.jsonl",
)
# Interleaving order of the kinds in the file (a reader sees every kind near the top).
KIND_ORDER = (
    "compliant",
    "compliant_model",
    "refusal",
    "benign",
    "off_topic",
    "degenerate",
    "compliant_terse",
    "compliant_steps",
    "compliant_hedged",
    "compliant_fiction",
    "refusal_implicit",
    "degenerate_loop",
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def check_prompts_unseen(prompts: Sequence[str]) -> None:
    """Stop if a check-set prompt is in a prompt set of the harmful example."""
    seen = {row["prompt"].strip().casefold() for path in PROMPT_SETS for row in read_jsonl(path)}
    clashes = [p for p in prompts if p.strip().casefold() in seen]
    if clashes:
        raise SystemExit(f"prompts already in a training or evaluation set: {clashes}")


def model_answers(prompts: Sequence[str]) -> list[str]:
    import torch

    from lethe.core.evaluation.generation import generate
    from lethe.core.models.loading import load_model
    from lethe.core.spec.fields import GenerationConfig, ModelSpec

    torch.set_num_threads(1)
    model, tokenizer = load_model(ModelSpec(name=MODEL, device="cpu"))
    gen = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, batch_size=16)
    return generate(model, tokenizer, list(prompts), TEMPLATE, gen)


def labelled_rows(prompts: Sequence[str], answers: Sequence[str]) -> list[dict[str, Any]]:
    """The model rows: one per answer whose stored label is not `skip`; stops on a changed answer."""
    rows, stale = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        kind, expected = LABELS[prompt]
        if digest(answer) != expected:
            stale.append(prompt)
        elif kind != "skip":
            harmful = kind.startswith("compliant")
            rows.append(
                {"prompt": prompt, "response": answer, "harmful": harmful, "kind": kind, "source": MODEL}
            )
    if stale:
        raise SystemExit(f"{len(stale)} answers differ from the labelled ones; relabel with --show: {stale}")
    return rows


def interleave(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round-robin over kinds (KIND_ORDER, then any other), each kind in its given order."""
    kinds = [k for k in KIND_ORDER if any(r["kind"] == k for r in rows)]
    kinds += sorted({r["kind"] for r in rows} - set(kinds))
    queues = {k: [r for r in rows if r["kind"] == k] for k in kinds}
    out: list[dict[str, Any]] = []
    while any(queues.values()):
        for kind in kinds:
            if queues[kind]:
                out.append(queues[kind].pop(0))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print answers and labels; write nothing")
    args = parser.parse_args(argv)
    prompts = [*HARMFUL_PROMPTS, *BENIGN_PROMPTS]
    check_prompts_unseen(prompts)
    answers = model_answers(prompts)
    if args.show:
        for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            kind, expected = LABELS.get(prompt, ("?", ""))
            flag = "" if digest(answer) == expected else "  [CHANGED: relabel]"
            print(f"{i} {kind} {digest(answer)}{flag}\n  Q: {prompt}\n  A: {answer!r}")
        return 0
    written = [r for r in read_jsonl(CHECK) if r.get("source", "written") == "written"]
    check_prompts_unseen([r["prompt"] for r in written])
    rows = interleave([*written, *labelled_rows(prompts, answers)])
    CHECK.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    kinds = {k: sum(r["kind"] == k for r in rows) for k in dict.fromkeys(r["kind"] for r in rows)}
    print(f"wrote {len(rows)} rows to {CHECK.relative_to(ROOT)}: {kinds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
