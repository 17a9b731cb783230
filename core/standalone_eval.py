"""`lethe eval`: measure a model, optionally with an adapter, on a spec's evaluation section."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .data import load_examples
from .evaluation import evaluate
from .models import ModelError, load_model
from .pipeline import judge_report, load_eval_sets, make_judge, model_answers
from .spec import JobSpec


def apply_adapter(model: Any, adapter: Path) -> Any:
    import peft

    if not (adapter / "adapter_config.json").exists():
        raise ModelError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    return peft.PeftModel.from_pretrained(model, str(adapter)).eval()


def evaluate_spec(spec: JobSpec, adapter: Path | None = None) -> dict[str, Any]:
    """Metrics of the spec's model (with `adapter` applied) on everything `spec.eval` names.

    The judge is trained as the job would train it; forget answers the model must write itself
    are written by the base model, before the adapter is applied.
    """
    model, tokenizer = load_model(spec.model)
    forget, normal = load_examples(spec.unlearn.forget), (
        load_examples(spec.unlearn.normal) if spec.unlearn.normal else [])
    if spec.unlearn.forget_answers_from == "model":
        with tempfile.TemporaryDirectory() as scratch:
            forget = model_answers(model, tokenizer, forget, spec, Path(scratch) / "answers.jsonl")
    sets = load_eval_sets(spec)
    judge = make_judge(spec, forget, normal) if sets.harmful_prompts else None
    if adapter is not None:
        model = apply_adapter(model, adapter)
    result = evaluate(model, tokenizer, spec.eval, spec.format, judge, forget=forget,
                      reference_responses=None, sets=sets)
    return {"metrics": result.metrics, "judge": judge_report(judge, spec)}
