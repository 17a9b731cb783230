"""A whole job: load, optionally fine-tune, evaluate, unlearn, evaluate again, write the run folder.

The run folder is self-describing: `spec.yaml` (resolved), `env.json`, `model.json` (the base
model's reference and weights hash), `run.log`, `train_log.jsonl`, `metrics.json` (before, after,
comparison, per-example results) and `adapter/` (a PEFT folder; `model/` instead for full
fine-tuning); `report.html` is built from those files (`lethe.core.run.report_html`). Calling `run_job`
again on the same folder resumes: finished parts are read back, training continues from its last
checkpoint. With `model.devices: N` the calling process is rank 0 of N data-parallel processes
(launch.py): it does all of the above; the other ranks only train (ranks.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lethe.core.data.examples import DataError, Example, load_examples, load_mc_questions
from lethe.core.data.tokens import render_template
from lethe.core.evaluation import EvalSets, build_judge, compare, evaluate, generate, load_check_set
from lethe.core.evaluation.judges import JudgePairs, judge_warning
from lethe.core.evaluation.privacy_checks import all_passed, privacy_checks
from lethe.core.evaluation.privacy_eval import load_privacy_sets
from lethe.core.evaluation.scores import is_degenerate, is_refusal
from lethe.core.evaluation.suite import planned_examples
from lethe.core.methods import finetune_terms, terms_for
from lethe.core.models.fingerprint import MODEL_CARD, model_card
from lethe.core.models.loading import base_reference, load_model
from lethe.core.models.lora import attach_lora
from lethe.core.models.reference import Reference
from lethe.core.models.weights import trainable_state
from lethe.core.run import folder as runfolder
from lethe.core.run.launch import data_parallel
from lethe.core.run.privacy_reference import compare_to_reference, privacy_reference
from lethe.core.run.unlearn_stage import (
    Split,
    extend_metrics,
    probes_report,
    selection_for,
    split_for_selection,
    unlearn_data,
)
from lethe.core.spec.fields import DatasetRef
from lethe.core.spec.job import JobSpec
from lethe.core.training import distributed as dp
from lethe.core.training.engine import Stage, StageData, run_stage, with_default_checkpoints
from lethe.core.training.hooks import ProgressTicker, RunHooks

log = logging.getLogger(__name__)
UNLEARN_DATA = "unlearning data written"  # the other ranks read the model's answers after this


@dataclass
class RunSummary:
    out_dir: Path
    metrics: dict[str, Any]
    stopped_reason: str


def _load(ref: DatasetRef | None) -> list[Example]:
    return load_examples(ref) if ref is not None else []


def load_eval_sets(spec: JobSpec) -> EvalSets:
    ev = spec.eval
    copyright = ev.copyright
    return EvalSets(
        harmful_prompts=_load(ev.harmful_prompts),
        benign_prompts=_load(ev.benign_prompts),
        normal=_load(ev.normal),
        mc=load_mc_questions(ev.multiple_choice) if ev.multiple_choice else [],
        copyright_forget=_load(copyright.forget_text) if copyright else [],
        copyright_retain=_load(copyright.retain_text) if copyright else [],
        harmful_sets={name: _load(ref) for name, ref in ev.harmful_sets.items()},
        privacy=load_privacy_sets(ev.privacy) if ev.privacy else None,
    )


def model_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[Example],
    spec: JobSpec,
    cache: Path,
    kind: str = "forget",
    on_batch: Callable[[int], None] | None = None,
) -> list[Example]:
    """Examples whose answers the model itself writes, before any unlearning.

    Forget answers: "make it stop answering these". Normal answers: what the retain terms keep.
    Answers that are refusals or degenerate loops are dropped: a refusal is nothing to unlearn and
    would teach the trained judge that refusals are harmful; a loop is nothing worth keeping.
    Cached in the run folder, so a resumed run uses exactly the same answers.
    """
    if cache.exists():
        return read_answers(cache)
    answers = generate(
        model,
        tokenizer,
        [e.prompt for e in prompts],
        spec.format.text,
        spec.unlearn.answer_generation,
        on_batch=on_batch,
    )
    examples = [
        Example(e.id, e.prompt, a)
        for e, a in zip(prompts, answers, strict=False)
        if a.strip() and not is_refusal(a) and not is_degenerate(a)
    ]
    log.info(
        "%s answers written by the model: kept %d of %d (refusals and degenerate dropped)",
        kind,
        len(examples),
        len(answers),
    )
    if not examples:
        raise DataError(
            f"the model answered none of the {kind} prompts usefully (all refusals or "
            "degenerate); check format.template"
        )
    runfolder.write_jsonl(cache, [vars(e) for e in examples])
    return examples


def read_answers(cache: Path) -> list[Example]:
    """The examples `model_answers` kept in `cache`."""
    rows = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines() if line]
    return [Example(r["id"], r["prompt"], r["response"]) for r in rows]


def _refusal_texts() -> list[str]:
    ref = DatasetRef(source="builtin:refusals", schema_="prompts", columns={"prompt": "text"})
    return [e.prompt for e in load_examples(ref)]


def _judge_texts(forget: list[Example], normal: list[Example]) -> tuple[list[str], list[str]]:
    """Harmful texts (forget answers) and harmless ones: refusals, normal and off-topic answers."""
    harmless = _refusal_texts() + [e.response for e in normal if e.response]
    return [e.response for e in forget], harmless


def _judge_pairs(forget: list[Example], normal: list[Example]) -> JudgePairs:
    """The forget prompts with their answers, the normal prompts with theirs (answered ones only),
    the built-in refusals: what lets the trained judge read the prompt as well as the answer."""
    return JudgePairs(
        harmful=[(e.prompt, e.response) for e in forget if e.response],
        harmless=[(e.prompt, e.response) for e in normal if e.response],
        refusals=_refusal_texts(),
    )


def make_judge(spec: JobSpec, forget: list[Example], normal: list[Example]) -> Any:
    """The spec's harmfulness judge, trained (if it is the trained kind) on this job's data."""
    texts = _judge_texts(forget, normal)
    return build_judge(spec.eval.judge, *texts, seed=spec.seed, pairs=_judge_pairs(forget, normal))


def judge_report(judge: Any, spec: JobSpec) -> dict[str, Any] | None:
    """How far to trust the harmful rate: the judge's accuracy on the shipped labelled check set
    (compliant harmful answers of several styles, refusals, benign, off-topic, degenerate), overall
    and per kind, on its held-out split, and a `judge_warning` when it is under 0.85 anywhere."""
    if judge is None:
        return None
    accuracy = judge.check_accuracy(load_check_set(spec.eval.judge.check_set))
    warning = judge_warning(accuracy)
    if warning:
        log.warning("%s", warning)
    return {
        "kind": judge.name,
        "heldout_accuracy": judge.heldout_accuracy,
        "check_set": spec.eval.judge.check_set,
        **accuracy,
        **({"details": judge.details} if getattr(judge, "details", None) else {}),
        "judge_warning": warning,
    }


def _evaluate_stage(
    name: str,
    model: Any,
    tokenizer: Any,
    spec: JobSpec,
    judge: Any,
    sets: EvalSets,
    forget: list[Example],
    out: Path,
    reference_responses: dict[str, str] | None,
    hooks: RunHooks,
) -> Any:
    """Evaluate once and keep the result in the run folder (read back when resuming)."""
    cached = out / f"eval_{name}.json"
    if cached.exists():
        return json.loads(cached.read_text(encoding="utf-8"))
    ticker = ProgressTicker(hooks, f"eval_{name}", planned_examples(spec.eval, sets, forget))
    result = evaluate(
        model,
        tokenizer,
        spec.eval,
        spec.format,
        judge,
        forget=forget,
        reference_responses=reference_responses,
        sets=sets,
        on_examples=ticker.advance,
    )
    payload = {"metrics": result.metrics, "per_example": result.per_example, "responses": result.responses}
    runfolder.write_json(cached, payload)
    return payload


def render_templates(spec: JobSpec, tokenizer: Any) -> JobSpec:
    """A copy of `spec` whose chat templates (format and eval formats) are written out as text by
    the tokenizer; the run folder keeps the spec as given."""
    fmt = spec.format.model_copy(
        update={
            "template": render_template(tokenizer, spec.format.template),
            "train_templates": [render_template(tokenizer, t) for t in spec.format.train_templates],
        }
    )
    formats = {name: render_template(tokenizer, t) for name, t in spec.eval.formats.items()}
    return spec.model_copy(update={"format": fmt, "eval": spec.eval.model_copy(update={"formats": formats})})


def run_job(spec: JobSpec, out_dir: Path, hooks: RunHooks | None = None) -> RunSummary:
    """Run (or resume) a job and write its run folder; raise `Cancelled` if asked to stop."""
    hooks = hooks or RunHooks()
    out = Path(out_dir)
    with runfolder.fenced(hooks.fence):
        runfolder.start(out, spec)
        # model.devices > 1: this process is rank 0 of a data-parallel group (launch.py)
        with runfolder.log_to(out / "run.log"), data_parallel(spec, out, hooks.checkpoint_every):
            return _run(spec, out, hooks)


def _stage(hooks: RunHooks, name: str) -> None:
    log.info("stage: %s", name)
    if hooks.on_stage:
        hooks.on_stage(name)


def _run(spec: JobSpec, out: Path, hooks: RunHooks) -> RunSummary:
    torch.manual_seed(spec.seed)
    _stage(hooks, "loading")
    model, tokenizer = load_model(spec.model)
    spec = render_templates(spec, tokenizer)
    runfolder.write_json(out / MODEL_CARD, model_card(spec.model, model))  # before any adapter
    forget, normal = _load(spec.unlearn.forget), _load(spec.unlearn.normal)
    sets = load_eval_sets(spec)
    model = trainable_model(spec, model)
    if spec.finetune is not None:
        _stage(hooks, "finetune")
        finetune(spec, model, tokenizer, out, hooks)
    if spec.unlearn.forget_answers_from == "model":
        _stage(hooks, "generate_forget_answers")
        ticker = ProgressTicker(hooks, "generate_forget_answers", len(forget))
        forget = model_answers(
            model, tokenizer, forget, spec, out / "forget_generated.jsonl", on_batch=ticker.advance
        )
    if spec.unlearn.normal_answers_from == "model" and normal:
        _stage(hooks, "generate_normal_answers")
        ticker = ProgressTicker(hooks, "generate_normal_answers", len(normal))
        normal = model_answers(
            model, tokenizer, normal, spec, out / "normal_generated.jsonl", "normal", ticker.advance
        )
    judge = None
    if sets.harmful_prompts:
        _stage(hooks, "judge")
        judge = make_judge(spec, forget, normal)
    _check_cancel(hooks)
    _stage(hooks, "eval_before")
    before = _evaluate_stage("before", model, tokenizer, spec, judge, sets, forget, out, None, hooks)
    _check_cancel(hooks)
    dp.agree(UNLEARN_DATA, 0)  # data parallel: the other ranks may now read the answers written
    _stage(hooks, "unlearn")
    stage, reference, start, split = unlearn_stage(spec, model, forget, normal, out, hooks)
    stage.selection = selection_for(spec, tokenizer, judge, sets, split, stage.checkpoint_dir)
    result = run_stage(model, tokenizer, stage, hooks, reference)
    runfolder.save_weights(model, out, spec.lora is not None, base_reference(spec.model))
    _stage(hooks, "eval_after")
    after = _evaluate_stage(
        "after", model, tokenizer, spec, judge, sets, forget, out, before["responses"], hooks
    )
    probes = None
    if spec.probes is not None:
        _stage(hooks, "probes")
        probes = probes_report(
            spec, model, tokenizer, judge, sets, forget, normal, out, start, hooks, after["metrics"]
        )
    retrain = privacy_reference(spec, sets.privacy, out, hooks, lambda: _fresh_model(spec))
    report = judge_report(judge, spec)
    comparison = _comparison(spec, before, after, retrain)
    metrics = runfolder.write_metrics(out, before, after, comparison, report, result)
    warning = report["judge_warning"] if report else None  # also top level: a reader must not miss it
    metrics = extend_metrics(out, metrics, selection=result.selection, probes=probes, judge_warning=warning)
    _stage(hooks, "done")
    return RunSummary(out_dir=out, metrics=metrics, stopped_reason=result.stopped_reason)


def trainable_model(spec: JobSpec, model: Any) -> Any:
    """The model with its LoRA adapter attached (seeded: alike on every rank), or all of it trainable."""
    if spec.lora is not None:
        return attach_lora(model, spec.lora, seed=spec.seed)
    model.requires_grad_(True)
    return model


def finetune(spec: JobSpec, model: Any, tokenizer: Any, out: Path, hooks: RunHooks) -> None:
    """The fine-tuning stage (`spec.finetune`), in place."""
    assert spec.finetune is not None
    formats = 1 + len(spec.format.train_templates)
    data = StageData(forget=load_examples(spec.finetune.data), formats=formats)
    stage = _make_stage(spec, "finetune", finetune_terms(), data, spec.finetune.train, out, hooks)
    run_stage(model, tokenizer, stage, hooks)


def unlearn_stage(
    spec: JobSpec, model: Any, forget: list[Example], normal: list[Example], out: Path, hooks: RunHooks
) -> tuple[Stage, Reference | None, dict[str, Any] | None, Split]:
    """The unlearning stage as every rank builds it (rank 0 adds checkpoint selection), its
    reference, the trainable weights it starts from, and the data split."""
    # the model as unlearning finds it: after a fine-tuning stage under LoRA that is not the
    # adapter-disabled (base) model, so the reference and the probes' "original" get its weights
    start = trainable_state(model) if spec.finetune is not None and spec.lora is not None else None
    reference = Reference(model, start) if any(t.needs_reference for t in terms_for(spec.unlearn)) else None
    split = split_for_selection(spec, forget, normal)
    data = unlearn_data(spec, split.forget, split.normal)
    stage = _make_stage(spec, "unlearn", terms_for(spec.unlearn), data, spec.unlearn.train, out, hooks)
    return stage, reference, start, split


def _fresh_model(spec: JobSpec) -> tuple[Any, Any]:
    """The base model again with a new adapter (the retrain reference of an erasure)."""
    model, tokenizer = load_model(spec.model)
    return trainable_model(spec, model), tokenizer


def _comparison(
    spec: JobSpec, before: dict[str, Any], after: dict[str, Any], retrain: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Before/after comparison; with `eval.privacy`, also its checks against the declared thresholds
    (in `comparison`, so the certificate carries them), against the retrain model where one was
    trained (its figures in `comparison.privacy_reference`)."""
    comparison = compare(before["metrics"], after["metrics"])
    if spec.eval.privacy is not None:
        b = before["metrics"] | compare_to_reference(before, retrain)
        a = after["metrics"] | compare_to_reference(after, retrain)
        if retrain:
            comparison["privacy_reference"] = {"before": b, "after": a} | {
                k: v for k, v in retrain.items() if k != "truth_ratios_forget"
            }
        checks = privacy_checks(b, a, spec.eval.privacy.thresholds)
        comparison["privacy_checks"] = checks
        comparison["privacy_passed"] = all_passed(checks)
    return comparison


def _make_stage(
    spec: JobSpec, name: str, terms: list, data: StageData, train: Any, out: Path, hooks: RunHooks
) -> Stage:
    return Stage(
        name=name,
        terms=terms,
        data=data,
        train=with_default_checkpoints(train, hooks.checkpoint_every),
        fmt=spec.format,
        seed=spec.seed,
        checkpoint_dir=out / "checkpoints" / name,
        log_path=out / "train_log.jsonl" if dp.is_main() else None,  # rank 0 writes the files
    )


def _check_cancel(hooks: RunHooks) -> None:
    from lethe.core.training.engine import Cancelled

    if hooks.cancelled():
        raise Cancelled("cancelled between stages")
