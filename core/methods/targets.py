"""Methods that pull the model toward a constructed target: RMU (activations toward a random
direction) and UNDIAL (outputs toward the original's distribution with the answer token lowered)."""

from __future__ import annotations

import functools
from typing import Literal

import torch
from pydantic import Field

from lethe.core.methods import losses
from lethe.core.methods.base import Term, TermInputs, position_mean, retain
from lethe.core.spec.fields import UnlearnCommon


class RmuStage(UnlearnCommon):
    """Representation Misdirection for Unlearning (Li et al. 2024, WMDP §5)."""

    method: Literal["rmu"] = "rmu"
    layer: int | None = Field(
        None, ge=0, description="decoder layer ℓ whose output is steered; null: WMDP's depth (7 of 32 layers)"
    )
    steering_coeff: float = Field(
        20.0,
        gt=0,
        description="c: forget activations are pushed to c·u; scales with the model's activation norms",
    )
    forget_weight: float = Field(1.0, ge=0)
    retain_weight: float = Field(100.0, ge=0, description="α, weight of the retain activation MSE")
    vector_seed: int = Field(0, ge=0, description="seed of the fixed random unit direction u")


class UndialStage(UnlearnCommon):
    """UNDIAL (Dong et al. 2025): self-distillation toward logits with the answer token lowered."""

    method: Literal["undial"] = "undial"
    beta: float = Field(10.0, gt=0, description="β, how far the target token's logit is lowered")
    forget_weight: float = Field(1.0, ge=0, description="γ")
    retain_weight: float = Field(0.0, ge=0, description="α, retain NLL (0 in the paper)")


@functools.lru_cache(maxsize=8)
def steering_vector(dim: int, seed: int) -> torch.Tensor:
    """u: entries i.i.d. U[0, 1), normalised to unit length, fixed for the run (WMDP). [D] fp32"""
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def rmu_terms(p: RmuStage) -> list[Term]:
    def forget(t: TermInputs) -> torch.Tensor:
        hidden = t.need("hidden")
        target = p.steering_coeff * steering_vector(hidden.shape[-1], p.vector_seed).to(hidden.device)
        return losses.activation_mse(hidden, target, t.need("tokens"))

    def keep(t: TermInputs) -> torch.Tensor:
        return losses.activation_mse(t.need("hidden"), t.need("ref_hidden"), t.need("tokens"))

    return [
        Term("rmu_forget", "forget", p.forget_weight, forget, reads="hidden", layer=p.layer),
        Term(
            "rmu_retain", "normal", p.retain_weight, keep, reference="hidden", reads="hidden", layer=p.layer
        ),
    ]


def undial_terms(p: UndialStage) -> list[Term]:
    def position(logits: torch.Tensor, ref: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        if ref is None:
            raise RuntimeError("undial needs the reference's logits")
        return losses.position_undial(logits, ref, targets, p.beta)

    return [
        Term(
            "undial",
            "forget",
            p.forget_weight,
            position_mean,
            reference="logits",
            position_loss=position,
        ),
        retain("nll", p.retain_weight),
    ]
