"""Gradient-ascent methods: Yao et al.'s update (the seed paper's), plain GA, Gradient Difference."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lethe.core.methods.base import Reduction, Term, ascent, kl_term, nll, retain
from lethe.core.spec.fields import UnlearnCommon


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


def yao_terms(p: YaoStage) -> list[Term]:
    return [
        Term("forget", "forget", p.forget_weight, ascent(p.reduction)),
        Term("random", "random", p.random_weight, nll(p.reduction)),
        kl_term("normal_kl", "normal", p.normal_weight),
    ]


def ga_terms(p: GradientAscentStage) -> list[Term]:
    return [Term("forget", "forget", 1.0, ascent(p.reduction))]


def graddiff_terms(p: GradDiffStage) -> list[Term]:
    return [
        Term("forget", "forget", p.forget_weight, ascent(p.reduction)),
        retain("nll", p.retain_weight, p.reduction),
    ]
