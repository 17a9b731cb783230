"""The retrain reference of an erasure (`eval.privacy.reference: retrain`).

MUSE's PrivLeak and TOFU's forget quality compare the unlearned model with a model that was never
trained on the forgotten people: the same fine-tune (data, settings, seed) without their rows. This
module trains that model after the job's own stages, on a fresh copy of the base model, measures
it with the privacy evaluation's own functions (membership AUC against the never-seen people, truth
ratios and QA accuracy on the forgotten people) and keeps the figures in the run folder
(`privacy_reference.json`, read back when a job resumes). `compare_to_reference` then gives
PrivLeak against the retrain model's AUC (MUSE's definition, instead of the holdout's 0.5) and
TOFU's forget quality (KS test p-value of the truth ratios, unlearned against retrain).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lethe.core.data.examples import Example, load_examples
from lethe.core.evaluation import privacy
from lethe.core.evaluation.privacy_eval import (
    PrivacyRun,
    PrivacySets,
    collect_mia,
    collect_qa,
    collect_truth,
    score_mia,
    score_qa,
    score_truth,
    subjects,
)
from lethe.core.methods import finetune_terms
from lethe.core.run import folder as runfolder
from lethe.core.spec.job import JobSpec
from lethe.core.training.engine import Stage, run_stage, with_default_checkpoints
from lethe.core.training.hooks import RunHooks
from lethe.core.training.rows import StageData

log = logging.getLogger(__name__)
REFERENCE_FILE = "privacy_reference.json"


def without_people(examples: Sequence[Example], names: Sequence[str]) -> list[Example]:
    """The examples that name none of the people, in the prompt or the answer: a retrain set must
    not hold a forgotten person's biography under someone else's question either."""
    return [e for e in examples if not any(n in e.prompt or n in e.response for n in names)]


def privacy_reference(
    spec: JobSpec,
    sets: PrivacySets | None,
    out: Path,
    hooks: RunHooks,
    fresh_model: Callable[[], tuple[Any, Any]],
) -> dict[str, Any] | None:
    """Train and measure the retrain model once (cached in the run folder); None unless the spec
    asks for it. `fresh_model()` gives the trainable base model (adapter attached) and tokenizer."""
    privacy_spec = spec.eval.privacy
    if privacy_spec is None or privacy_spec.reference != "retrain" or sets is None:
        return None
    cached = out / REFERENCE_FILE
    if cached.exists():
        return dict(json.loads(cached.read_text(encoding="utf-8")))
    assert spec.finetune is not None  # JobSpec refuses reference: retrain without a finetune stage
    everything = load_examples(spec.finetune.data)
    kept = without_people(everything, subjects(sets.forget))
    model, tokenizer = fresh_model()
    formats = 1 + len(spec.format.train_templates)
    stage = Stage(
        name="retrain",
        terms=finetune_terms(),
        data=StageData(forget=kept, formats=formats),
        train=with_default_checkpoints(spec.finetune.train, hooks.checkpoint_every),
        fmt=spec.format,
        seed=spec.seed,
        checkpoint_dir=out / "checkpoints" / "retrain",
        log_path=out / "train_log.jsonl",
    )
    run_stage(model, tokenizer, stage, hooks)
    run = PrivacyRun(model, tokenizer, privacy_spec, spec.format, spec.eval.batch_size, lambda _: None)
    forget_mia = collect_mia(run, sets.forget, "forget")
    truth = collect_truth(run, sets.forget, "forget")
    metrics = score_mia(forget_mia, collect_mia(run, sets.holdout, "holdout"))
    metrics |= score_qa(collect_qa(run, sets.forget), "forget") | score_truth(truth, "forget")
    report = {
        "trained_examples": len(kept),
        "removed_examples": len(everything) - len(kept),
        "metrics": {k: v for k, v in metrics.items() if "/" not in k},
        "truth_ratios_forget": [r["truth_ratio"] for r in truth],
    }
    runfolder.write_json(cached, report)
    log.info("retrain reference: %s", report["metrics"])
    return report


def compare_to_reference(evaluated: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, float]:
    """PrivLeak against the retrain model's AUC and TOFU's forget quality of one evaluation payload
    (metrics and per-example rows: before or after unlearning); {} without a reference."""
    if not reference:
        return {}
    found: dict[str, float] = {}
    auc = evaluated["metrics"].get("privacy_auc_minkpp")
    ref_auc = reference["metrics"].get("privacy_auc_minkpp")
    if auc is not None and ref_auc is not None:
        found["privacy_auc_minkpp_retrain"] = ref_auc
        found["privacy_privleak_retrain"] = privacy.privleak(auc, ref_auc)
    ratios = [r["truth_ratio"] for r in evaluated.get("per_example", {}).get("privacy_truth_forget", [])]
    if ratios and reference.get("truth_ratios_forget"):
        found["privacy_forget_quality"] = privacy.ks_test(ratios, reference["truth_ratios_forget"])[1]
    return found
