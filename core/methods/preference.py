"""Preference-style methods: NPO, SimNPO, and refusal answers (IdK fine-tuning, IdK-DPO).

Defaults are those of the reference configurations (algorithms.md §3.4-3.6): NPO β = 0.1 with a
retain NLL (open-unlearning NPO.yaml); SimNPO β = 4.5, forget weight 0.125, γ = 0 (TOFU forget10,
open-unlearning SimNPO.yaml); IdK-DPO β = 0.1 (open-unlearning DPO.yaml).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lethe.core.methods import losses
from lethe.core.methods.base import Reduction, Term, TermInputs, default_refusals, nll, retain
from lethe.core.spec.fields import DatasetRef, UnlearnCommon

RetainKind = Literal["nll", "kl"]


class NpoStage(UnlearnCommon):
    """Negative Preference Optimization (Zhang et al. 2024) with a retain term."""

    method: Literal["npo"] = "npo"
    beta: float = Field(0.1, gt=0, description="β, inverse temperature of the log-ratio")
    forget_weight: float = Field(1.0, ge=0, description="weight of the NPO term (npo_coeff)")
    retain_weight: float = Field(1.0, ge=0, description="weight of the retain term")
    retain_loss: RetainKind = Field(
        "nll", description="nll: 'npo_grad_diff'; kl: 'npo_KL' (needs the reference)"
    )


class SimNpoStage(UnlearnCommon):
    """SimNPO (Fan et al. 2024): NPO without a reference, length-normalised, with a margin γ."""

    method: Literal["simnpo"] = "simnpo"
    beta: float = Field(4.5, gt=0)
    gamma: float = Field(0.0, ge=0, description="margin γ (the code puts it inside β·(...))")
    forget_weight: float = Field(0.125, ge=0, description="npo_coeff")
    retain_weight: float = Field(1.0, ge=0, description="weight of the retain NLL (grad_diff_coeff)")


class IdkStage(UnlearnCommon):
    """IdK fine-tuning (TOFU 'idk'): NLL of a refusal answer to each forget prompt, plus retain NLL."""

    method: Literal["idk"] = "idk"
    forget_weight: float = Field(1.0, ge=0, description="weight of the refusal-answer NLL")
    retain_weight: float = Field(1.0, ge=0, description="weight of the retain term")
    retain_loss: RetainKind = Field(
        "nll",
        description="nll: TOFU's retain NLL; kl: forward KL to the original "
        "on the normal rows (needs the reference)",
    )
    refusals: DatasetRef = Field(
        default_factory=default_refusals, description="refusal answers, one drawn per forget prompt and step"
    )
    reduction: Reduction = "mean"


class IdkDpoStage(UnlearnCommon):
    """IdK-DPO (Maini et al. 2024, TOFU; open-unlearning DPO): a refusal preferred over the forget answer."""

    method: Literal["idk_dpo"] = "idk_dpo"
    beta: float = Field(0.1, gt=0)
    forget_weight: float = Field(1.0, ge=0, description="γ, weight of the DPO term")
    retain_weight: float = Field(1.0, ge=0, description="α, weight of the retain NLL")
    refusals: DatasetRef = Field(
        default_factory=default_refusals,
        description="the preferred answers, one drawn per forget prompt and step",
    )


def npo_terms(p: NpoStage) -> list[Term]:
    def loss(t: TermInputs) -> torch.Tensor:
        return losses.npo(t.need("logp"), t.mask, t.need("ref_logp"), p.beta)

    return [
        Term("npo", "forget", p.forget_weight, loss, reference="logp"),
        retain(p.retain_loss, p.retain_weight),
    ]


def simnpo_terms(p: SimNpoStage) -> list[Term]:
    def loss(t: TermInputs) -> torch.Tensor:
        return losses.simnpo(t.need("logp"), t.mask, p.beta, p.gamma)

    return [Term("simnpo", "forget", p.forget_weight, loss), retain("nll", p.retain_weight)]


def idk_terms(p: IdkStage) -> list[Term]:
    return [
        Term("idk", "idk", p.forget_weight, nll(p.reduction)),
        retain(p.retain_loss, p.retain_weight, p.reduction),
    ]


def idk_dpo_terms(p: IdkDpoStage) -> list[Term]:
    def loss(t: TermInputs) -> torch.Tensor:
        lose = t.paired()
        return losses.dpo(
            t.need("logp"),
            t.mask,
            t.need("ref_logp"),
            lose.need("logp"),
            lose.mask,
            lose.need("ref_logp"),
            p.beta,
        )

    return [
        Term("idk_dpo", "idk", p.forget_weight, loss, reference="logp", pair="forget"),
        retain("nll", p.retain_weight),
    ]
