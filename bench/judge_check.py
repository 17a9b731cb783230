"""Accuracy of harmful-answer judges on the shipped check set, per kind of text.

    . .venv/bin/activate
    export LETHE_CACHE_DIR=$PWD/.lethe/cache HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
    python bench/judge_check.py                       # answer-only (before) and trained (after)
    python bench/judge_check.py --judges trained --json runs/judge_bench/trained.json
    python bench/judge_check.py --judges trained,trained+data --validation   # choose on this

Each judge is trained exactly as a job of `--spec` trains it (`pipeline.make_judge`): on the
model's own answers to the spec's forget prompts (harmful) and to its normal prompts, plus the
built-in refusals (harmless). The answers are generated once and cached under `--cache` (as a run
folder caches them). `answer-only` is the trained judge without the prompts, the `trained` judge
before the prompt-aware one (`judges.train_answer_classifier`, same texts and seed);
`trained+data` is the `trained` judge also trained on the train split of the shipped
judge-training data (`builtin:judge_train`), to show what that data adds. The check set is never
training data: the script stops if one of its responses is among the training texts.
`--validation` measures on the validation split of `builtin:judge_train` instead (never trained
on): what the judge's settings are to be chosen on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lethe.core.data.examples import Example
from lethe.core.evaluation.judge_data import TRAINING_SOURCE, load_judge_training
from lethe.core.evaluation.judges import (
    Judge,
    JudgeSpec,
    RefusalJudge,
    build_judge,
    judge_accuracy,
    load_check_set,
    train_answer_classifier,
    train_judge,
)
from lethe.core.models.loading import load_model
from lethe.core.run import pipeline
from lethe.core.spec.job import JobSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent


def job_answers(spec: JobSpec, cache: Path) -> tuple[list[Example], list[Example]]:
    """The model's forget and normal answers, as the job writes them (cached in `cache`)."""
    model, tokenizer = load_model(spec.model)
    render = getattr(pipeline, "render_templates", None)  # chat templates written out, if supported
    spec = render(spec, tokenizer) if render else spec
    cache.mkdir(parents=True, exist_ok=True)
    forget = pipeline.model_answers(
        model, tokenizer, pipeline._load(spec.unlearn.forget), spec, cache / "forget_generated.jsonl"
    )
    normal = pipeline._load(spec.unlearn.normal)
    if spec.unlearn.normal_answers_from == "model" and normal:
        normal = pipeline.model_answers(
            model, tokenizer, normal, spec, cache / "normal_generated.jsonl", "normal"
        )
    return forget, normal


def make(name: str, spec: JudgeSpec, forget: list[Example], normal: list[Example], seed: int) -> Judge:
    harmful, harmless = pipeline._judge_texts(forget, normal)
    if name == "answer-only":
        return train_answer_classifier(spec, harmful, harmless, seed)
    if name == "refusal":
        return RefusalJudge()
    if name == "trained+data":
        pairs = pipeline._judge_pairs(forget, normal)
        return train_judge(spec, harmful, harmless, seed, pairs, load_judge_training())
    return build_judge(spec, harmful, harmless, seed, pipeline._judge_pairs(forget, normal))


def check_unseen(rows: Sequence[dict[str, Any]], forget: list[Example], normal: list[Example]) -> None:
    harmful, harmless = pipeline._judge_texts(forget, normal)
    shipped = load_check_set(TRAINING_SOURCE, split="train")  # the shipped training data
    texts = [*harmful, *harmless, *(e.prompt for e in [*forget, *normal])]
    texts += [r[k] for r in shipped for k in ("prompt", "response")]
    seen = {t.strip() for t in texts if t.strip()}
    clashes = [r for r in rows if r["response"].strip() in seen or r["prompt"].strip() in seen]
    if clashes:
        raise SystemExit(f"{len(clashes)} check-set rows are training texts of the judge: {clashes[:3]}")


def print_errors(name: str, judge: Judge, rows: Sequence[dict[str, Any]]) -> None:
    verdicts = judge.judge([r["prompt"] for r in rows], [r["response"] for r in rows])
    for verdict, row in zip(verdicts, rows, strict=True):
        if verdict != row["harmful"]:
            line = f"{name} wrong on {row['kind']}: {row['prompt']!r} -> {row['response'][:80]!r}"
            print(line, file=sys.stderr)


def table(reports: dict[str, dict[str, Any]]) -> str:
    names = list(reports)
    kinds = sorted({k for r in reports.values() for k in r["per_kind"]})
    first = next(iter(reports.values()))
    lines = ["| kind | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for kind in kinds:
        cells = [f"{r['per_kind'][kind]['accuracy']:.2f}" for r in reports.values()]
        lines.append(f"| {kind} | {first['per_kind'][kind]['n']} | " + " | ".join(cells) + " |")
    lines.append(
        f"| **all** | {first['n']} | "
        + " | ".join(f"**{r['accuracy']:.3f}**" for r in reports.values())
        + " |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "harmful-smollm2.yaml"))
    parser.add_argument(
        "--judges", default="answer-only,trained", help="answer-only, trained, trained+data, refusal"
    )
    parser.add_argument("--check", default="builtin:judge_check")
    parser.add_argument(
        "--validation", action="store_true", help="measure on the validation split of builtin:judge_train"
    )
    parser.add_argument("--cache", default=str(ROOT / "runs" / "judge_bench"))
    parser.add_argument("--json", help="also write the reports here")
    parser.add_argument("--errors", action="store_true", help="list the rows each judge gets wrong")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"device": "cpu"})})
    forget, normal = job_answers(spec, Path(args.cache))
    if args.validation:
        rows = load_check_set(TRAINING_SOURCE, split="validation")
    else:
        rows = load_check_set(args.check)
    check_unseen(rows, forget, normal)
    reports = {}
    for name in args.judges.split(","):
        started = time.perf_counter()
        judge = make(name, spec.eval.judge, forget, normal, spec.seed)
        built = time.perf_counter() - started
        reports[name] = {**judge_accuracy(judge, rows), "build_s": round(built, 1)}
        if args.errors:
            print_errors(name, judge, rows)
        print(f"{name}: accuracy {reports[name]['accuracy']:.3f}, built in {built:.0f} s", file=sys.stderr)
    print(table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
