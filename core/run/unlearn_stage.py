"""The parts of a job around the unlearning stage that the pipeline assembles from the spec:
the stage's data (with refusal answers), its checkpoint selection, and the probes after it."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.core.data.examples import Example, load_examples
from lethe.core.evaluation import EvalSets, Judge
from lethe.core.evaluation.selection import Selection, averaged_over_formats, light_evaluator
from lethe.core.run import folder as runfolder
from lethe.core.run.privacy_probes import run_privacy_probes
from lethe.core.run.probes import run_probes
from lethe.core.spec.job import JobSpec
from lethe.core.spec.options import SelectSpec, objective_of
from lethe.core.training.hooks import ProgressTicker, RunHooks
from lethe.core.training.rows import StageData

log = logging.getLogger(__name__)
PROBES_FILE = "probes.json"


def unlearn_data(spec: JobSpec, forget: list[Example], normal: list[Example]) -> StageData:
    """The unlearning stage's rows; methods with `idk` rows get the job's refusal answers."""
    refusals_ref = getattr(spec.unlearn, "refusals", None)
    refusals = [e.prompt for e in load_examples(refusals_ref)] if refusals_ref is not None else []
    return StageData(
        forget=forget,
        normal=normal,
        refusals=refusals,
        random_answers=getattr(spec.unlearn, "random_answers", 1),
        formats=1 + len(spec.format.train_templates),
    )


@dataclass(frozen=True)
class Split:
    """The unlearning stage's forget and normal examples, and those `select.holdout` kept out of it."""

    forget: list[Example]
    normal: list[Example]
    held_forget: list[Example]
    held_normal: list[Example]


def hold_out(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(kept, held out): a seeded draw of round(share·n) examples, at least one of each when share
    > 0 and n ≥ 2; both keep the input order (a pure function of the seed: resumes draw the same)."""
    if share <= 0 or len(examples) < 2:
        return examples, []
    count = min(len(examples) - 1, max(1, round(len(examples) * share)))
    held = set(random.Random(seed).sample(range(len(examples)), count))
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


def split_for_selection(spec: JobSpec, forget: list[Example], normal: list[Example]) -> Split:
    """Hold out `select.holdout` of the forget and normal examples when the job selects a checkpoint."""
    share = spec.select.holdout if spec.select is not None else 0.0
    kept_forget, held_forget = hold_out(forget, share, spec.seed)
    kept_normal, held_normal = hold_out(normal, share, spec.seed + 1)
    if held_forget or held_normal:
        log.info(
            "select.holdout: %d forget and %d normal examples kept out of unlearning for validation",
            len(held_forget),
            len(held_normal),
        )
    return Split(kept_forget, kept_normal, held_forget, held_normal)


def selection_for(
    spec: JobSpec, tokenizer: Any, judge: Judge | None, sets: EvalSets, split: Split, folder: Path | None
) -> Selection | None:
    """The spec's evaluation during training (`select`), or None."""
    if spec.select is None:
        return None
    objective = objective_of(spec.criterion, spec.eval)
    forget, normal = split.held_forget or split.forget, split.held_normal or split.normal
    validation = validation_sets(spec.select, sets, forget, normal, spec.eval.max_examples)
    evaluate = light_evaluator(
        tokenizer,
        spec.eval,
        spec.format,
        judge,
        validation,
        forget,
        normal,
        spec.select.probe_examples,
        objective,
        spec.criterion,
    )
    if spec.select.harmful_formats == "all":
        evaluate = averaged_over_formats(evaluate, list(spec.eval.formats))
    return Selection(evaluate, spec.select, spec.criterion, objective, folder=folder)


def validation_sets(
    chosen: SelectSpec, sets: EvalSets, forget: list[Example], normal: list[Example], eval_cap: int
) -> EvalSets:
    """What evaluation during training reads: the `select` section's sets, else `forget`/`normal`
    (the held-out part of the training data under `select.holdout`, else the training data).

    The eval sets' harmful and benign prompts and normal pairs are the job's test set, so they
    are never read before the final evaluation. Normal perplexity is validated on gold pairs: the
    eval normal set's rows past the `eval_cap` the evaluation reads, when it has such rows (the
    model's own answers to the normal prompts, the fallback, let a +20 % perplexity checkpoint
    through). The copyright objective keeps the eval passages: they are the text being forgotten
    (the training text), not a held-out sample.
    """
    harmful = _load(chosen.harmful_prompts) or [Example(e.id, e.prompt, "") for e in forget]
    benign = _load(chosen.benign_prompts) or [Example(e.id, e.prompt, "") for e in normal]
    gold = _load(chosen.normal) or sets.normal[eval_cap:]
    if not gold:
        log.warning("select: no gold normal pairs past the evaluation's; validating on training data")
    return EvalSets(
        harmful_prompts=harmful,
        benign_prompts=benign,
        normal=gold or normal,
        copyright_forget=sets.copyright_forget,
    )


def _load(ref: Any) -> list[Example]:
    return load_examples(ref) if ref is not None else []


def probes_report(
    spec: JobSpec,
    model: Any,
    tokenizer: Any,
    judge: Judge | None,
    sets: EvalSets,
    forget: list[Example],
    normal: list[Example],
    out: Path,
    start: dict[str, Any] | None = None,
    hooks: RunHooks | None = None,
    after: dict[str, float] | None = None,
) -> dict[str, Any] | None:
    """Run the spec's robustness probes once; kept in the run folder, read back when resuming.
    Progress: probes done of those the spec enables. `after`: the job's own metrics after
    unlearning (the privacy probes' NF4 baseline: not evaluated again)."""
    probes = spec.probes
    if probes is None:
        return None
    cached = out / PROBES_FILE
    if cached.exists():
        return json.loads(cached.read_text(encoding="utf-8"))
    enabled = sum(p is not None for p in (probes.relearn, probes.quantize, probes.rephrase))
    ticker = ProgressTicker(hooks or RunHooks(), "probes", enabled, unit="probe")
    objective = objective_of(spec.criterion, spec.eval)
    report = run_probes(
        model, tokenizer, spec, judge, sets, forget, normal, objective, start, on_probe=ticker.advance
    )
    report |= run_privacy_probes(model, tokenizer, spec, sets.privacy, after)
    ticker.advance(enabled)  # a probe that had nothing to measure (no judge, one example) is done too
    runfolder.write_json(cached, report)
    log.info("probes: %s", report["summary"])
    return report


def extend_metrics(out: Path, metrics: dict[str, Any], **parts: Any) -> dict[str, Any]:
    """Add sections (selection, probes) to metrics.json; None-valued parts are left out."""
    metrics.update({name: value for name, value in parts.items() if value is not None})
    runfolder.write_json(out / "metrics.json", metrics)
    return metrics
