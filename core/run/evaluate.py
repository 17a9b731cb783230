"""`lethe eval`: measure a model, optionally with an adapter, on a spec's evaluation section."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from lethe.core.data.examples import Example, load_examples
from lethe.core.evaluation import evaluate
from lethe.core.models.errors import ModelError
from lethe.core.models.loading import load_model
from lethe.core.models.lora import attach_lora, is_peft
from lethe.core.models.weights import load_trainable_
from lethe.core.run.pipeline import judge_report, load_eval_sets, make_judge, model_answers, render_templates
from lethe.core.spec.job import JobSpec
from lethe.core.training.checkpoint import STATE_FILE


def apply_adapter(model: Any, adapter: Path) -> Any:
    import peft

    if not (adapter / "adapter_config.json").exists():
        raise ModelError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    return peft.PeftModel.from_pretrained(model, str(adapter)).eval()


def apply_checkpoint(model: Any, spec: JobSpec, path: Path) -> Any:
    """The spec's model with the trainable weights of a Lethe checkpoint: a stage's
    `checkpoints/<stage>/step-N/` folder or a selection snapshot `best-step-N.pt`. A model that
    already carries the spec's LoRA adapter gets the checkpoint's weights in place."""
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise ModelError(
            f"{path} is not a Lethe checkpoint (a step-N folder holding {STATE_FILE}, "
            "or a best-step-N.pt snapshot)"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    weights = state.get("model", state)  # a stage checkpoint also holds the optimizer's state
    if spec.lora is not None and not is_peft(model):
        model = attach_lora(model, spec.lora, seed=spec.seed)
    load_trainable_(model, weights, f"checkpoint {path} (with the spec's LoRA settings)")
    return model.eval()


def _answers(model: Any, tokenizer: Any, spec: JobSpec) -> tuple[list[Example], list[Example]]:
    """The forget and normal examples as the job trains its judge on them: answers the model
    must write itself are written by the base model, before any adapter."""
    forget, normal = (
        load_examples(spec.unlearn.forget),
        (load_examples(spec.unlearn.normal) if spec.unlearn.normal else []),
    )
    with tempfile.TemporaryDirectory() as scratch:
        if spec.unlearn.forget_answers_from == "model":
            forget = model_answers(model, tokenizer, forget, spec, Path(scratch) / "forget.jsonl")
        if spec.unlearn.normal_answers_from == "model" and normal:
            normal = model_answers(model, tokenizer, normal, spec, Path(scratch) / "normal.jsonl", "normal")
    return forget, normal


def evaluate_spec(
    spec: JobSpec, adapter: Path | None = None, checkpoints: list[Path] | None = None
) -> dict[str, Any]:
    """Metrics of the spec's model (with `adapter`, or each training checkpoint, applied) on
    everything `spec.eval` names, with the judge trained as the job would train it. Several
    checkpoints share the model answers and the judge: {"checkpoints": [{checkpoint, metrics}]}."""
    model, tokenizer = load_model(spec.model)
    spec = render_templates(spec, tokenizer)
    forget, normal = _answers(model, tokenizer, spec)
    sets = load_eval_sets(spec)
    judge = make_judge(spec, forget, normal) if sets.harmful_prompts else None

    def measure(candidate: Any) -> dict[str, Any]:
        return evaluate(
            candidate,
            tokenizer,
            spec.eval,
            spec.format,
            judge,
            forget=forget,
            reference_responses=None,
            sets=sets,
        ).metrics

    if checkpoints and len(checkpoints) > 1:
        rows = []
        for path in checkpoints:
            model = apply_checkpoint(model, spec, path)
            rows.append({"checkpoint": str(path), "metrics": measure(model)})
        return {"checkpoints": rows, "judge": judge_report(judge, spec)}
    if adapter is not None:
        model = apply_adapter(model, adapter)
    elif checkpoints:
        model = apply_checkpoint(model, spec, checkpoints[0])
    return {"metrics": measure(model), "judge": judge_report(judge, spec)}
