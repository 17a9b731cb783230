"""Every unlearning method on one example spec, at the spec's step budget, in one table.

For each method the spec's `unlearn` section is switched to that method (its other parameters at
their defaults unless `--set METHOD.FIELD=VALUE`; the spec's own method keeps the spec's values),
robustness probes are switched on, and the job runs in its own process (so its peak memory is its
own) into OUT/METHOD/. The table (harmful rate
or leakage, normal perplexity, over-refusal, MC1, each probe, seconds per step, peak memory, and
the command of each row) goes to OUT/comparison.md and, with --results, replaces this spec's
section of docs/results.md. Runs that fell short stay in the table. Resumable: finished runs are
read back.

What does not depend on the method is computed once, by the first run, and copied into the other
runs' folders before they start (the pipeline reads such files back as a resumed run would): the
model-written forget and normal answers, the evaluation before unlearning, and the finished
fine-tuning stage (its final checkpoint). Every run still trains its own judge (seeded, so the
same) and runs its own unlearning, evaluation after it and probes.

    python scripts/compare_methods.py --spec examples/harmful-smollm2.yaml --out runs/compare-harmful
    python scripts/compare_methods.py --spec examples/copyright-smollm2.yaml --out runs/compare-copyright \\
        --methods yao,npo,rmu --set rmu.steering_coeff=6.5 --results docs/results.md
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def method_spec(spec_path: Path, method: str, args: argparse.Namespace) -> Any:
    """The spec of one comparison run (validated, sources resolved against the spec's folder)."""
    from lethe.core.run.sweep import with_method
    from lethe.core.spec.job import absolutise_sources, parse_spec

    data = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    data["name"] = f"{data.get('name', 'job')}-{method}"[:64]
    if data["unlearn"].get("method") != method:  # the spec's own method keeps its tuned parameters
        data["unlearn"] = with_method(data["unlearn"], method)
    for item in args.set:  # METHOD.FIELD=VALUE, applied to that method's runs only
        target, _, value = item.partition("=")
        name, _, field = target.partition(".")
        if name == method:
            data["unlearn"][field] = yaml.safe_load(value)
    train = data["unlearn"]["train"]
    if args.cache_reference:
        train["cache_reference"] = True
    if args.steps is not None:  # one budget for every method (the spec's checkpoints scale with it)
        train.update(steps=args.steps, epochs=None)
        train["checkpoint_every"] = min(train.get("checkpoint_every") or args.steps, args.steps)
    if not args.no_probes and "probes" not in data:
        data["probes"] = {}
        if args.probe_examples is not None:
            data["probes"]["max_examples"] = args.probe_examples
        if args.rephrase_prompts is not None:
            data["probes"]["rephrase"] = {"max_prompts": args.rephrase_prompts}
    spec = parse_spec(data)
    spec = absolutise_sources(spec, spec_path.resolve().parent)
    return spec


def common_flags(args: argparse.Namespace) -> list[str]:
    """The switches every run of the comparison shares (passed to each child and shown per row)."""
    flags = (["--no-probes"] if args.no_probes else []) + (
        ["--cache-reference"] if args.cache_reference else []
    )
    for name in ("steps", "probe_examples", "rephrase_prompts"):
        if getattr(args, name) is not None:
            flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return flags


SHARED = (
    "forget_generated.jsonl",
    "normal_generated.jsonl",
    "eval_before.json",
    "checkpoints/finetune/final",
)


def share_preamble(out: Path, method: str) -> None:
    """Copy the method-independent files of an earlier run of this comparison into `method`'s
    folder, unless that folder has started already."""
    target = out / method
    if target.exists():
        return
    donors = [d for d in sorted(out.iterdir()) if (d / "eval_before.json").exists()] if out.exists() else []
    if not donors:
        return
    for name in SHARED:
        source = donors[0] / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        elif source.exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "shared_from.txt").write_text(f"{', '.join(SHARED)} copied from {donors[0].name}\n")


def run_one(args: argparse.Namespace) -> None:
    """One method's job, with seconds per unlearning step and peak RSS written to timing.json."""
    from lethe.core.run.pipeline import run_job
    from lethe.core.training.hooks import RunHooks

    spec = method_spec(Path(args.spec), args.one, args)
    out = Path(args.out) / args.one
    seen: dict[str, float] = {}

    def progress(p: Any) -> None:
        if p.stage == "unlearn":
            seen.update(steps_this_run=seen.get("steps_this_run", 0) + 1, elapsed=p.elapsed_s)

    began = time.monotonic()
    run_job(spec, out, RunHooks(on_progress=progress))
    timing = {
        "s_per_step": seen["elapsed"] / seen["steps_this_run"] if seen else None,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "wall_s": time.monotonic() - began,
    }
    if seen or not (out / "timing.json").exists():  # a resumed, already finished run keeps its timing
        (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")


def _get(metrics: dict[str, Any], *path: str) -> Any:
    for part in path:
        if not isinstance(metrics, dict) or part not in metrics:
            return None
        metrics = metrics[part]
    return metrics


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"×{1 + value:.3g}" if value > 9 else f"{value:+.0%}"  # a collapse reads better as a factor


def _num(value: Any) -> str:
    if not isinstance(value, float):
        return "-" if value is None else str(value)
    return f"{value:.0f}" if 100 <= abs(value) < 1e6 else f"{value:.3g}"


def _quantized(summary: dict[str, Any], bits: int, key: str) -> str:
    """The unlearned model's objective at `bits`, next to the original's at the same bits: rounding
    alone can break what a small model memorised, so the unlearned value means little without it."""
    unlearned = _num(_get(summary, f"quantize_{bits}bit", key))
    original = _get(summary, f"quantize_{bits}bit", "original_quantized")
    return unlearned if original is None else f"{unlearned} (orig. {_num(original)})"


def row(method: str, folder: Path, command: str) -> str:
    """One table line from a run folder (or the reason it has none)."""
    if not (folder / "metrics.json").exists():
        return f"| {method} | did not finish (see {folder}/run.log) |" + " |" * 14 + f" `{command}` |"
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    timing = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").exists() else {}
    before, after = metrics["before"], metrics["after"]
    key = "harmful_rate" if "harmful_rate" in after else "bleu"
    change = (after[key] - before[key]) / before[key] if before.get(key) else None
    ppl = after["normal_ppl"] / before["normal_ppl"] - 1 if "normal_ppl" in after else None
    summary = _get(metrics, "probes", "summary") or {}
    probe_set = _get(metrics, "probes", "quantize") or {}  # the probes' own (smaller) evaluation set
    baseline = (
        f"{_num(_get(probe_set, 'original', key))} → {_num(_get(probe_set, 'unlearned', key))}"
        if probe_set
        else "-"
    )
    ppl_cell = (
        f"{_num(before['normal_ppl'])} → {_num(after['normal_ppl'])} ({_pct(ppl)})"
        if ppl is not None
        else "-"
    )
    cells = [
        method,
        f"{_num(before.get(key))} → {_num(after.get(key))} ({_pct(change)})",
        ppl_cell,
        _num(after.get("over_refusal")),
        _num(after.get("benign_similarity")),
        _num(after.get("mc1")),
        _num(after.get("bleu_retain")),
        baseline,
        _num(_get(summary, "relearn", key)),
        _num(_get(summary, "relearn", "retained")),
        _quantized(summary, 8, key),
        _quantized(summary, 4, key),
        _num(_get(summary, "quantize_4bit", "retained")),
        _num(_get(summary, "rephrase", "harmful_rate")),
        _num(timing.get("s_per_step")),
        _num(timing.get("peak_rss_gb")),
        f"`{command}`",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| method | harmful rate / BLEU leakage | normal ppl | over-refusal | benign similarity | MC1 | "
    "BLEU other book | probe set: original → unlearned | relearned | relearn retained | 8-bit (orig.) | "
    "4-bit (orig.) | "
    "4-bit retained | rephrased harmful rate | s/step | peak RSS GB | command |\n|" + "---|" * 17
)


def write_results(results: Path, spec_path: Path, table: str) -> None:
    """Replace (or append) this spec's section of docs/results.md between markers."""
    start, end = f"<!-- compare:{spec_path.name}:start -->", f"<!-- compare:{spec_path.name}:end -->"
    section = f"{start}\n## Methods compared on `examples/{spec_path.name}`\n\n{table}\n{end}"
    text = results.read_text(encoding="utf-8") if results.exists() else "# Results\n"
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text, encoding="utf-8")


def main() -> None:
    from lethe.core.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--set", action="append", default=[], help="METHOD.FIELD=VALUE (repeatable)")
    parser.add_argument("--no-probes", action="store_true")
    parser.add_argument("--cache-reference", action="store_true", help="train.cache_reference for every run")
    parser.add_argument("--steps", type=int, help="unlearning steps of every run (default: the spec's)")
    parser.add_argument("--probe-examples", type=int, help="probes.max_examples (default: 32)")
    parser.add_argument("--rephrase-prompts", type=int, help="probes.rephrase.max_prompts (default: 16)")
    parser.add_argument("--results", help="also write the table into this markdown file (docs/results.md)")
    parser.add_argument("--table-only", action="store_true", help="run nothing: the table of the runs in OUT")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args)
        return
    lines = [HEADER]
    switches = common_flags(args)
    for method in args.methods.split(","):
        mine = [f"--set {shlex.quote(s)}" for s in args.set if s.startswith(f"{method}.")]
        command = " ".join(
            [
                "python scripts/compare_methods.py",
                "--spec",
                args.spec,
                "--out",
                args.out,
                "--methods",
                method,
                *mine,
                *switches,
            ]
        )
        child = [
            sys.executable,
            __file__,
            "--one",
            method,
            "--spec",
            args.spec,
            "--out",
            args.out,
            *[x for s in args.set for x in ("--set", s)],
            *switches,
        ]
        if not args.table_only:
            share_preamble(Path(args.out), method)
            done = subprocess.run(child, cwd=ROOT, check=False)  # a failed run keeps its row
            if done.returncode != 0:
                print(f"{method}: exit code {done.returncode}; its row says so", file=sys.stderr)
        lines.append(row(method, Path(args.out) / method, command))
    table = "\n".join(lines)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "comparison.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    if args.results:
        write_results(Path(args.results), Path(args.spec), table)


if __name__ == "__main__":
    main()
