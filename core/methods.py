"""Unlearning methods: a forget term plus optional retain terms, each with a weight.

A method is one entry of `METHODS`: its typed parameters (a stage model with `method: Literal`),
the paper it comes from, and a function from those parameters to weighted `Term`s. A term names
the rows it scores (`forget`, `random`: forget prompts with random normal answers, `normal`) and a
loss from `losses.py`. Adding a method means adding its loss function and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from . import losses
from .config import UnlearnCommon

Rows = Literal["forget", "random", "normal"]
Reduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class TermInputs:
    """What a term's loss sees for its rows: logp, mask [B, T-1]; logits, ref_logits [B, T-1, V]."""

    logp: torch.Tensor
    mask: torch.Tensor
    logits: torch.Tensor
    ref_logits: torch.Tensor | None


@dataclass(frozen=True)
class Term:
    """One weighted loss term over one kind of rows; `loss` returns one value per example."""

    name: str
    rows: Rows
    weight: float
    loss: Callable[[TermInputs], torch.Tensor]
    needs_reference: bool = False


# ------------------------------------------------------------------ typed parameters per method
class YaoStage(UnlearnCommon):
    """Yao et al. (2023) / Gundavarapu et al. (2024): θ ← θ − ε1∇L_fgt − ε2∇L_rdn − ε3∇L_nor."""

    method: Literal["yao"] = "yao"
    forget_weight: float = Field(0.5, ge=0, description="ε1, gradient ascent on forget answers")
    random_weight: float = Field(1.0, ge=0, description="ε2, NLL of random normal answers to forget prompts")
    normal_weight: float = Field(1.0, ge=0, description="ε3, forward KL to the original on normal data")
    random_answers: int = Field(1, ge=1, le=16, description="random answers drawn per forget prompt")
    reduction: Reduction = Field("mean", description="per-example token mean (reference code) or sum (paper)")


class GradientAscentStage(UnlearnCommon):
    """Plain gradient ascent on the forget answers (Jang et al. 2023; Yao et al. 2023 'GA')."""

    method: Literal["ga"] = "ga"
    reduction: Reduction = "mean"


class GradDiffStage(UnlearnCommon):
    """Gradient Difference (Liu et al. 2022): ascent on forget answers, descent on retain answers."""

    method: Literal["graddiff"] = "graddiff"
    forget_weight: float = Field(1.0, ge=0, description="γ, weight of the ascent term")
    retain_weight: float = Field(1.0, ge=0, description="α, weight of the retain NLL")
    reduction: Reduction = "mean"


# ------------------------------------------------------------------ term builders
def _ascent(reduction: Reduction) -> Callable[[TermInputs], torch.Tensor]:
    return lambda t: losses.gradient_ascent(t.logp, t.mask, reduction)


def _nll(reduction: Reduction) -> Callable[[TermInputs], torch.Tensor]:
    return lambda t: losses.sequence_nll(t.logp, t.mask, reduction)


def _kl(t: TermInputs) -> torch.Tensor:
    if t.ref_logits is None:
        raise RuntimeError("the KL term needs reference logits")
    return losses.forward_kl(t.ref_logits, t.logits, t.mask)


def yao_terms(p: YaoStage) -> list[Term]:
    return [
        Term("forget", "forget", p.forget_weight, _ascent(p.reduction)),
        Term("random", "random", p.random_weight, _nll(p.reduction)),
        Term("normal_kl", "normal", p.normal_weight, _kl, needs_reference=True),
    ]


def ga_terms(p: GradientAscentStage) -> list[Term]:
    return [Term("forget", "forget", 1.0, _ascent(p.reduction))]


def graddiff_terms(p: GradDiffStage) -> list[Term]:
    return [
        Term("forget", "forget", p.forget_weight, _ascent(p.reduction)),
        Term("retain", "normal", p.retain_weight, _nll(p.reduction)),
    ]


def finetune_terms(reduction: Reduction = "mean") -> list[Term]:
    """Plain fine-tuning (the copyright case's alignment stage): NLL of the stage's answers."""
    return [Term("nll", "forget", 1.0, _nll(reduction))]


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    stage: type[UnlearnCommon]
    terms: Callable[..., list[Term]]
    reference: str  # what the method needs of the original model, for `lethe methods`


METHODS: dict[str, Method] = {
    "yao": Method("yao", "Yao et al. 2023 (arXiv 2310.10683) eq. 1-4; Gundavarapu et al. 2024 (arXiv 2405.15152)",
                  YaoStage, yao_terms, "original model's logits on normal data (adapter disabled under LoRA)"),
    "ga": Method("ga", "Jang et al. 2023 (arXiv 2210.01504); Yao et al. 2023 'GA'",
                 GradientAscentStage, ga_terms, "none"),
    "graddiff": Method("graddiff", "Liu et al. 2022 (arXiv 2203.12817); TOFU (arXiv 2401.06121)",
                       GradDiffStage, graddiff_terms, "none"),
}


def terms_for(stage: UnlearnCommon) -> list[Term]:
    """The weighted terms of an unlearning stage; zero-weight terms are dropped (they cost a pass)."""
    method = METHODS[stage.method]  # type: ignore[attr-defined]
    return [term for term in method.terms(stage) if term.weight != 0]
