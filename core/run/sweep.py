"""`lethe sweep`: run a small grid of one spec within a stated budget, then tabulate and plot
forgetting against retention (the Pareto front), marking the runs that meet the spec's criterion.

Each grid point is a full job (`run_job`) in `OUT/runs/NAME/`, so it is resumable and has its own
run folder. When the grid varies only the unlearning stage, the parts before it (fine-tuning,
model-written answers, the evaluation before unlearning) are the same for every run: they are
computed by the first run and copied into the others instead of being recomputed.
"""

from __future__ import annotations

import copy
import csv
import itertools
import logging
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.core.evaluation.selection import improvement, meets
from lethe.core.spec.fields import UnlearnCommon
from lethe.core.spec.job import JobSpec, SpecError, parse_spec
from lethe.core.spec.options import LOWER_IS_BETTER, Objective, objective_of

log = logging.getLogger(__name__)
# unlearn.* fields that change what happens before unlearning (so nothing can be shared)
_BEFORE_FIELDS = {"forget", "normal", "forget_answers_from", "normal_answers_from", "answer_generation"}
_SHARED = ("eval_before.json", "forget_generated.jsonl", "normal_generated.jsonl", "checkpoints/finetune")


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]
    spec: JobSpec


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}  # e.g. select.every when the spec has no select section
        node = node[part]
    node[last] = value


def expand(spec: JobSpec) -> list[Variant]:
    """Every grid point as a validated spec (sweep section removed); errors name the point."""
    if spec.sweep is None:
        raise SpecError("the spec has no sweep section (sweep: {grid: {FIELD: [VALUES]}})")
    base = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    base.pop("sweep")
    keys = list(spec.sweep.grid)
    variants = []
    for number, values in enumerate(itertools.product(*spec.sweep.grid.values()), start=1):
        overrides = dict(zip(keys, values, strict=False))
        data = copy.deepcopy(base)
        for key, value in overrides.items():
            _set(data, key, value)
        if "unlearn.method" in overrides:  # another method: drop the previous one's parameters
            keep = {key.split(".")[1] for key in overrides if key.startswith("unlearn.")}
            data["unlearn"] = with_method(data["unlearn"], data["unlearn"]["method"], keep)
        data["name"] = f"{spec.name}-{number:02d}"
        try:
            variants.append(Variant(data["name"], overrides, parse_spec(data)))
        except SpecError as err:
            raise SpecError(f"sweep point {overrides}: {err}") from None
    check_budget(spec, variants)
    return variants


def with_method(unlearn: dict[str, Any], method: str, keep: set[str] | None = None) -> dict[str, Any]:
    """An `unlearn` section switched to `method`: the previous method's own parameters are dropped
    (a `forget_weight` means ε1 to yao and γ to npo), so the new one starts from its defaults;
    the fields every method shares (data, train, ...) and those in `keep` stay."""
    shared = set(UnlearnCommon.model_fields)
    return {
        k: v for k, v in {**unlearn, "method": method}.items() if k in shared | {"method"} | (keep or set())
    }


def check_budget(spec: JobSpec, variants: list[Variant]) -> None:
    sweep = spec.sweep
    assert sweep is not None
    if len(variants) > sweep.max_runs:
        raise SpecError(f"the grid has {len(variants)} runs, over sweep.max_runs={sweep.max_runs}")
    if sweep.max_total_steps is not None:
        steps = [s for v in variants if (s := v.spec.unlearn.train.steps) is not None]
        if len(steps) < len(variants):
            raise SpecError("sweep.max_total_steps counts unlearn.train.steps: set steps, not epochs")
        if sum(steps) > sweep.max_total_steps:
            raise SpecError(
                f"the grid's runs take {sum(steps)} steps in all, over "
                f"sweep.max_total_steps={sweep.max_total_steps}"
            )


def shares_before(spec: JobSpec) -> bool:
    """True when every grid field only changes the unlearning stage or what is measured after it."""
    for key in spec.sweep.grid if spec.sweep else ():
        parts = key.split(".")
        if parts[0] in ("select", "criterion", "probes"):
            continue
        if parts[0] != "unlearn" or len(parts) < 2 or parts[1] in _BEFORE_FIELDS:
            return False
    return True


def _copy_before(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in _SHARED:
        if (source / name).is_dir() and not (target / name).exists():
            shutil.copytree(source / name, target / name)
        elif (source / name).is_file() and not (target / name).exists():
            shutil.copy2(source / name, target / name)


def run_sweep(spec: JobSpec, out: Path) -> list[dict[str, Any]]:
    """Run every grid point (skipping those past `max_minutes`), then write the table and plot."""
    from lethe.core.run.pipeline import run_job

    variants, began, rows = expand(spec), time.monotonic(), []
    limit = spec.sweep.max_minutes if spec.sweep else None
    first: Path | None = None
    for variant in variants:
        folder = out / "runs" / variant.name
        if limit is not None and time.monotonic() - began > limit * 60:
            rows.append(_row(variant, folder, spec, "skipped: sweep.max_minutes reached", None, 0.0))
            continue
        if first is not None and shares_before(spec):
            _copy_before(first, folder)
        start = time.monotonic()
        try:
            summary = run_job(variant.spec, folder)
            rows.append(_row(variant, folder, spec, "done", summary.metrics, time.monotonic() - start))
            first = first or folder
        except Exception as err:  # noqa: BLE001 - one failed point must not lose the others; the row says why
            log.error("sweep run %s failed:\n%s", variant.name, traceback.format_exc())
            rows.append(_row(variant, folder, spec, f"failed: {err}", None, time.monotonic() - start))
    write_outputs(rows, spec, out)
    return rows


def _row(
    variant: Variant, folder: Path, spec: JobSpec, status: str, metrics: dict[str, Any] | None, seconds: float
) -> dict[str, Any]:
    objective = objective_of(spec.criterion, spec.eval)
    row: dict[str, Any] = {
        "run": variant.name,
        **variant.overrides,
        "status": status,
        "seconds": round(seconds, 1),
        "folder": str(folder),
    }
    if metrics is None:
        return row
    before, after = metrics["before"], metrics["after"]
    selection = metrics.get("selection") or {}
    probes = (metrics.get("probes") or {}).get("summary", {})
    row.update(
        {
            "steps": metrics["training"]["steps"],
            "chosen_step": selection.get("chosen_step"),
            f"{objective}_before": before.get(objective),
            f"{objective}_after": after.get(objective),
            "improvement": improvement(before, after, objective),
            "normal_ppl_change": after["normal_ppl"] / before["normal_ppl"] - 1
            if "normal_ppl" in after and "normal_ppl" in before
            else None,
            "over_refusal": after.get("over_refusal"),
            "mc1": after.get("mc1"),
            "relearn_retained": probes.get("relearn", {}).get("retained"),
            "quant4_retained": probes.get("quantize_4bit", {}).get("retained"),
            "meets": meets(after, before, spec.criterion, objective),
        }
    )
    return row


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both: lower is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((a <= x and b <= y) and (a < x or b < y) for j, (a, b) in enumerate(points) if j != i):
            front.append(i)
    return front


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_outputs(rows: list[dict[str, Any]], spec: JobSpec, out: Path) -> None:
    """sweep.csv, sweep.md and pareto.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with (out / "sweep.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if c != "folder"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in shown) + " |" for row in rows]
    (out / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(rows, spec, out / "pareto.png")


def plot(rows: list[dict[str, Any]], spec: JobSpec, path: Path) -> None:
    """Forgetting (the objective after unlearning) against retention (normal perplexity change)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    objective: Objective = objective_of(spec.criterion, spec.eval)
    done = [
        r for r in rows if r.get("normal_ppl_change") is not None and r.get(f"{objective}_after") is not None
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    sign = 1 if LOWER_IS_BETTER[objective] else -1
    points = [(r["normal_ppl_change"] * 100, sign * r[f"{objective}_after"]) for r in done]
    front = sorted(pareto(points), key=lambda i: points[i][0])
    if front:
        ax.plot(
            [points[i][0] for i in front],
            [sign * points[i][1] for i in front],
            "--",
            color="tab:blue",
            label="Pareto front",
        )
    for r, (x, _) in zip(done, points, strict=False):
        ax.scatter(
            x,
            r[f"{objective}_after"],
            marker="*" if r["meets"] else "o",
            s=140 if r["meets"] else 50,
            color="tab:green" if r["meets"] else "tab:gray",
        )
        ax.annotate(
            r["run"].rsplit("-", 1)[-1],
            (x, r[f"{objective}_after"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if done:  # every run starts from the same model: its value before unlearning, at 0% change
        ax.scatter(
            [0.0],
            [done[0][f"{objective}_before"]],
            marker="x",
            color="black",
            s=60,
            label="before unlearning",
        )
    if spec.criterion.max_normal_ppl_increase is not None:
        ax.axvline(
            spec.criterion.max_normal_ppl_increase * 100,
            color="tab:red",
            linestyle=":",
            label=f"normal ppl limit +{spec.criterion.max_normal_ppl_increase:.0%}",
        )
    ax.scatter([], [], marker="*", color="tab:green", s=140, label="meets the criterion")
    ax.set_xlabel("normal perplexity change after unlearning (%)  [retention: left is better]")
    ax.set_ylabel(
        f"{objective} after unlearning  [forgetting: {'lower' if sign == 1 else 'higher'} is better]"
    )
    ax.set_title(f"sweep {spec.name}: {len(done)} of {len(rows)} runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
