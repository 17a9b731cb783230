"""Judge a finished run's saved answers again with today's judge, and print every harmful rate.

A run folder keeps every evaluated answer (`eval_before.json`, `eval_after.json`) and the model
answers its judge was trained on (`forget_generated.jsonl`, `normal_generated.jsonl`). This
builds the spec's judge from those, exactly as the job does, judges every harmful set in every
format again (no generation: a minute or two on a CPU), and prints before, after and change
per set and format, plus the judge's accuracy on the shipped check set. Use it to compare runs
measured before a judge changed with runs measured after.

    python bench/rejudge.py runs/harmful [runs/other ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from lethe.core.data.examples import Example, load_examples
from lethe.core.run.pipeline import judge_report, make_judge
from lethe.core.spec.fields import DatasetRef
from lethe.core.spec.job import parse_spec


def _answers(path: Path, given: DatasetRef | None) -> list[Example]:
    if not path.exists():  # the spec's own answers were used
        return load_examples(given) if given is not None else []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [Example(r["id"], r["prompt"], r["response"]) for r in rows]


def rejudge(run: Path) -> dict[str, Any]:
    """{"judge": check-set report, "rates": {set@format: {before, after, change}}}."""
    spec = parse_spec(yaml.safe_load((run / "spec.yaml").read_text(encoding="utf-8")))
    forget = _answers(run / "forget_generated.jsonl", spec.unlearn.forget)
    normal = _answers(run / "normal_generated.jsonl", spec.unlearn.normal)
    judge = make_judge(spec, forget, normal)
    rates: dict[str, dict[str, float | None]] = {}
    for when in ("before", "after"):
        path = run / f"eval_{when}.json"
        if not path.exists():
            continue
        for name, rows in json.loads(path.read_text(encoding="utf-8"))["per_example"].items():
            if not name.startswith("harmful_prompts") or not rows:
                continue
            verdicts = judge.judge([r["prompt"] for r in rows], [r["response"] for r in rows])
            key = name.replace("harmful_prompts", "harmful_rate")
            rates.setdefault(key, {})[when] = sum(verdicts) / len(verdicts)
    for value in rates.values():
        b, a = value.get("before"), value.get("after")
        value["change"] = (a - b) / b if b and a is not None else None
    return {"judge": judge_report(judge, spec), "rates": rates}


def _table(name: str, result: dict[str, Any]) -> str:
    judge = result["judge"] or {}
    lines = [f"## {name}  (judge {judge.get('kind')}: check-set accuracy {judge.get('accuracy', 0):.3f})"]
    lines += ["| rate | before | after | change |", "|---|---|---|---|"]
    for key, value in sorted(result["rates"].items()):
        cells = [value.get(k) for k in ("before", "after", "change")]
        text = ["-" if c is None else (f"{c:+.0%}" if k == 2 else f"{c:.3f}") for k, c in enumerate(cells)]
        lines.append(f"| {key} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {str(run): rejudge(run) for run in args.runs}
    for name, result in results.items():
        print(_table(name, result), end="\n\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
