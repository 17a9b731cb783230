"""Spec sections beyond one training run: the selection criterion, evaluation during training,
robustness probes and sweeps (pydantic, unknown keys rejected like every other section)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from lethe.core.spec.evaluation import EvalSpec
from lethe.core.spec.fields import DatasetRef, StrictModel

Objective = Literal["harmful_rate", "forget_nll", "bleu"]
LOWER_IS_BETTER: dict[str, bool] = {"harmful_rate": True, "bleu": True, "forget_nll": False}


class Criterion(StrictModel):
    """What "best" means, for the checkpoint a run keeps and for the runs of a sweep.

    The best evaluation has the best `objective` among those meeting every constraint; the
    constraints are measured against the model before unlearning.
    """

    objective: Literal["auto", "harmful_rate", "forget_nll", "bleu"] = Field(
        "auto",
        description="auto: harmful_rate if eval.harmful_prompts, else bleu if eval.copyright, "
        "else forget_nll (higher is better; the others lower)",
    )
    max_normal_ppl_increase: float | None = Field(
        0.10, ge=0, description="normal perplexity may rise by at most this fraction (0.10 = +10%)"
    )
    max_over_refusal: float | None = Field(
        None, ge=0, le=1, description="over-refusal on benign prompts at most this rate"
    )
    min_improvement: float | None = Field(
        None,
        ge=0,
        description="a run 'meets' the criterion when the constraints hold and the objective "
        "improved by at least this fraction (0.9: harmful rate -90%; forget_nll: "
        "+90%); null: improved at all",
    )


def objective_of(criterion: Criterion, eval_spec: EvalSpec) -> Objective:
    """The objective `auto` stands for, given what the spec evaluates."""
    if criterion.objective != "auto":
        return criterion.objective
    if eval_spec.harmful_prompts is not None:
        return "harmful_rate"
    if eval_spec.copyright is not None:
        return "bleu"
    return "forget_nll"


def check_objective(criterion: Criterion, eval_spec: EvalSpec) -> None:
    """The objective must be measurable with the spec's evaluation sets."""
    objective = objective_of(criterion, eval_spec)
    if objective == "harmful_rate" and eval_spec.harmful_prompts is None:
        raise ValueError("criterion.objective harmful_rate needs eval.harmful_prompts")
    if objective == "bleu" and eval_spec.copyright is None:
        raise ValueError("criterion.objective bleu needs eval.copyright")


class SelectSpec(StrictModel):
    """Evaluate during unlearning, keep the best checkpoint by `criterion`, stop when it stalls."""

    every: int = Field(10, ge=1, description="evaluate every N optimizer steps (and before the first)")
    patience: int | None = Field(
        3, ge=1, description="stop after K evaluations without improvement; null: run all steps"
    )
    min_delta: float = Field(0.0, ge=0, description="an improvement smaller than this does not count")
    probe_examples: int = Field(16, ge=1, le=1024, description="examples per set in each evaluation")
    harmful_formats: Literal["train", "all"] = Field(
        "train",
        description="the validation harmful rate the objective reads: in the training format only, or "
        "the mean over it and every eval.formats format (harmful_rate@train keeps the first)",
    )
    # Validation sets: never the eval sets, whose figures are the job's reported result. Choosing
    # a checkpoint by them would fit the result to the test prompts.
    harmful_prompts: DatasetRef | None = Field(
        None, description="validation harmful prompts; default: the forget set's prompts"
    )
    benign_prompts: DatasetRef | None = Field(
        None, description="validation benign prompts (over-refusal); default: the normal set's prompts"
    )
    normal: DatasetRef | None = Field(
        None, description="validation normal pairs (perplexity); default: the unlearning normal set"
    )
    holdout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of the forget and normal examples kept out of unlearning "
        "(a seeded draw) to stand in for the validation sets not named above; 0: validate on training "
        "data. Leave 0 for copyright: every forget passage must be unlearned",
    )


class RelearnProbe(StrictModel):
    """Fine-tune the unlearned model on part of the forget set, measure forgetting on the rest."""

    steps: int = Field(10, ge=1)
    fraction: float = Field(0.5, gt=0, lt=1, description="share of the forget set relearned")
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)


class QuantizeProbe(StrictModel):
    """Round the merged model's linear weights to `bits` (symmetric, round-to-nearest, on the CPU)."""

    bits: list[Literal[4, 8]] = Field(default_factory=lambda: [8, 4])  # type: ignore[arg-type]  # pydantic's stub wants list[Literal] from the lambda
    scheme: Literal["rtn", "nf4"] = Field(
        "rtn",
        description="rtn: a uniform symmetric grid; nf4: 4-bit weights on QLoRA's NormalFloat "
        "codebook in blocks of group_size (default 64), as bitsandbytes stores them (8-bit stays rtn)",
    )
    group_size: int | None = Field(
        None,
        ge=8,
        description="null: one scale per output channel; N: one per N input weights (like NF4 blocks)",
    )


def default_rephrasings() -> DatasetRef:
    return DatasetRef(source="builtin:rephrasings")


class RephraseProbe(StrictModel):
    """Forget prompts wrapped in templates (role-play, fiction, other languages, prefixes)."""

    templates: DatasetRef = Field(
        default_factory=default_rephrasings, description="rows {kind, template}; template contains {prompt}"
    )
    kinds: list[str] | None = Field(None, description="only these template kinds; null: all")
    max_prompts: int = Field(16, ge=1, description="harmful prompts wrapped in each template")


class ProbesSpec(StrictModel):
    """Robustness probes run after unlearning; null disables one."""

    relearn: RelearnProbe | None = Field(default_factory=RelearnProbe)
    quantize: QuantizeProbe | None = Field(default_factory=QuantizeProbe)
    rephrase: RephraseProbe | None = Field(default_factory=RephraseProbe)
    max_examples: int = Field(32, ge=1, description="examples per evaluation set in each probe")


class SweepSpec(StrictModel):
    """A grid over spec fields (dotted paths), run by `lethe sweep` within a stated budget."""

    grid: dict[str, list[Any]] = Field(description="e.g. {'unlearn.train.lr': [1e-4, 3e-4]}")
    max_runs: int = Field(8, ge=1, le=256, description="refuse a grid with more runs than this")
    max_total_steps: int | None = Field(
        None, ge=1, description="refuse a grid whose runs' steps sum to more than this"
    )
    max_minutes: float | None = Field(None, gt=0, description="start no new run after this long")

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("sweep.grid needs at least one field")
        empty = [key for key, values in grid.items() if not values]
        if empty:
            raise ValueError(f"sweep.grid values must be non-empty lists: {', '.join(empty)}")
        return grid
