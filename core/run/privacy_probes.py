"""Robustness probes for an erasure (`eval.privacy`): do the forgotten people stay forgotten when
an attacker fine-tunes the model on some of them, or when the model is served in 4 bits?

- relearn: the forgotten people are split in two halves by order of appearance; the model is
  fine-tuned (the probe's steps and rate) on the records of the first half only, and the privacy
  evaluation is run on the second half, which it never saw again: its leak rate and QA accuracy
  should stay at the never-seen level, as TOFU and MUSE ask of a forget set that holds under
  relearning (Lynch et al. 2024 show knowledge of one part of a forget set returning from another);
- quantize: the privacy evaluation of the merged model with its linear weights rounded as the
  `quantize` probe rounds them (NF4 by default: the format most people serve small models in).

Both report before (the unlearned model) and after (probed) for the measured people, and restore
the unlearned weights afterwards: a probe never changes the job's result.
"""

from __future__ import annotations

from typing import Any

from lethe.core.data.examples import Example
from lethe.core.evaluation.privacy_checks import Check, privacy_checks
from lethe.core.evaluation.privacy_eval import PrivacyRun, PrivacySets, Record, evaluate_privacy
from lethe.core.methods import finetune_terms
from lethe.core.models.weights import load_trainable_, trainable_state
from lethe.core.run.probes import merged_copy, quantize_description, quantize_model_
from lethe.core.spec.evaluation import PrivacyThresholds
from lethe.core.spec.fields import TrainConfig
from lethe.core.spec.job import JobSpec
from lethe.core.spec.options import QuantizeProbe, RelearnProbe
from lethe.core.training.engine import Stage, run_stage
from lethe.core.training.rows import StageData

# The figures each probe reports: what an erasure promises (leak rate and QA of the forgotten
# people at the never-seen level, retained people kept, membership indistinguishable).
# Retained people are the job's own check, not the probes': the probes skip them (their extraction
# samples are a third of an evaluation's cost).
HEADLINE = ("privacy_leak_forget", "privacy_qa_forget", "privacy_qa_holdout", "privacy_privleak")


def split_subjects(records: list[Record]) -> tuple[list[str], list[str]]:
    """(relearned, measured): the first half of the forgotten people (rounded down, at least one)
    and the rest, in order of first appearance, so a resumed run splits them the same way."""
    people = list(dict.fromkeys(r.subject for r in records))
    if len(people) < 2:
        raise ValueError("the privacy relearn probe needs at least two forgotten people")
    half = max(1, len(people) // 2)
    return people[:half], people[half:]


def as_examples(records: list[Record]) -> list[Example]:
    """The records as question/answer pairs for a fine-tuning stage."""
    return [Example(r.id, r.prompt, r.response) for r in records]


def headline(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def _evaluate(model: Any, tokenizer: Any, spec: JobSpec, sets: PrivacySets) -> dict[str, float]:
    assert spec.eval.privacy is not None  # only called for a spec with a privacy evaluation
    run = PrivacyRun(model, tokenizer, spec.eval.privacy, spec.format, spec.eval.batch_size, lambda _: None)
    measured = PrivacySets(forget=sets.forget, retain=[], holdout=sets.holdout)
    return headline(evaluate_privacy(run, measured)[0])


def probe_privacy_relearn(
    model: Any, tokenizer: Any, spec: JobSpec, sets: PrivacySets, probe: RelearnProbe
) -> dict[str, Any]:
    """Fine-tune on half of the forgotten people's records; measure the other half."""
    learned, measured = split_subjects(sets.forget)
    kept = PrivacySets(
        forget=[r for r in sets.forget if r.subject in measured], retain=sets.retain, holdout=sets.holdout
    )
    report: dict[str, Any] = {
        "relearned_subjects": learned,
        "measured_subjects": measured,
        "steps": probe.steps,
        "lr": probe.lr,
        "unlearned": _evaluate(model, tokenizer, spec, kept),
    }
    saved = trainable_state(model)
    train = TrainConfig(lr=probe.lr, steps=probe.steps, batch_size=probe.batch_size, max_grad_norm=1.0)
    forget = as_examples([r for r in sets.forget if r.subject in learned])
    run_stage(
        model,
        tokenizer,
        Stage("relearn", finetune_terms(), StageData(forget=forget), train, spec.format, seed=spec.seed),
    )
    report["probed"] = _evaluate(model, tokenizer, spec, kept)
    load_trainable_(model, saved)  # back to the unlearned weights: the probe must not change the result
    return report


def probe_privacy_quantize(
    model: Any,
    tokenizer: Any,
    spec: JobSpec,
    sets: PrivacySets,
    probe: QuantizeProbe,
    after: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The privacy evaluation of the merged unlearned model at each of the probe's bit widths;
    `after`: the job's own evaluation of the unlearned model (the same figures: not run again)."""
    unlearned = headline(after) if after else _evaluate(model, tokenizer, spec, sets)
    report: dict[str, Any] = {"method": quantize_description(probe), "unlearned": unlearned}
    for bits in probe.bits:
        clone = merged_copy(model)
        assert clone is not None  # the unlearned model always has its weights
        quantize_model_(clone, bits, probe.group_size, probe.scheme)
        report[f"unlearned_{bits}bit"] = _evaluate(clone, tokenizer, spec, sets)
        del clone
    return report


def run_privacy_probes(
    model: Any, tokenizer: Any, spec: JobSpec, sets: PrivacySets | None, after: dict[str, float] | None = None
) -> dict[str, Any]:
    """The privacy probes the spec's `probes` section enables; {} without a privacy evaluation.
    `after`: the metrics of the job's evaluation after unlearning, if at hand."""
    probes = spec.probes
    if probes is None or sets is None or spec.eval.privacy is None:
        return {}
    report: dict[str, Any] = {}
    if probes.relearn is not None and len({r.subject for r in sets.forget}) >= 2:
        report["privacy_relearn"] = probe_privacy_relearn(model, tokenizer, spec, sets, probes.relearn)
    if probes.quantize is not None:
        quantize = probes.quantize
        report["privacy_quantize"] = probe_privacy_quantize(model, tokenizer, spec, sets, quantize, after)
    if report:
        report["privacy_checks"] = probe_checks(report, spec.eval.privacy.thresholds)
    return report


def probe_checks(report: dict[str, Any], t: PrivacyThresholds) -> dict[str, list[Check]]:
    """The spec's forgetting thresholds (leak rate, QA at the never-seen level, PrivLeak) applied to
    each privacy probe's result: `before` is the unlearned model, `after` the probed one. Keeping
    the retained people and perplexity are the job's own checks, not the probes'."""
    forgetting = t.model_copy(update={"max_retain_qa_drop": None, "max_normal_ppl_increase": None})
    checks: dict[str, list[Check]] = {}
    if "privacy_relearn" in report:
        part = report["privacy_relearn"]
        checks["privacy_relearn"] = privacy_checks(part["unlearned"], part["probed"], forgetting)
    for key, value in report.get("privacy_quantize", {}).items():
        if key.startswith("unlearned_") and key.endswith("bit"):
            name = f"privacy_quantize_{key.removeprefix('unlearned_')}"
            checks[name] = privacy_checks(report["privacy_quantize"]["unlearned"], value, forgetting)
    return checks
