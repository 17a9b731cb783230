"""Unlearning methods: a forget term plus optional retain terms, each with a weight.

A method is one entry of `METHODS`: its typed parameters (a stage model with `method: Literal`),
the paper it comes from, and a function from those parameters to weighted `Term`s. A term names
the rows it scores (see `base.py`) and a loss from `losses.py`. Adding a method means adding its
loss function and one entry here (its stage model and term function live next to its family).
"""

from __future__ import annotations

from lethe.core.methods.base import (
    Method,
    PositionLoss,
    Reads,
    Reduction,
    RefNeed,
    Rows,
    Term,
    TermInputs,
    default_refusals,
    nll,
)
from lethe.core.methods.gradient import (
    GradDiffStage,
    GradientAscentStage,
    YaoStage,
    ga_terms,
    graddiff_terms,
    yao_terms,
)
from lethe.core.methods.preference import (
    IdkDpoStage,
    IdkStage,
    NpoStage,
    SimNpoStage,
    idk_dpo_terms,
    idk_terms,
    npo_terms,
    simnpo_terms,
)
from lethe.core.methods.targets import RmuStage, UndialStage, rmu_terms, undial_terms
from lethe.core.spec.fields import UnlearnCommon

__all__ = [
    "METHODS",
    "GradDiffStage",
    "GradientAscentStage",
    "IdkDpoStage",
    "IdkStage",
    "Method",
    "NpoStage",
    "PositionLoss",
    "Reads",
    "Reduction",
    "RefNeed",
    "RmuStage",
    "Rows",
    "SimNpoStage",
    "Term",
    "TermInputs",
    "UndialStage",
    "YaoStage",
    "default_refusals",
    "finetune_terms",
    "terms_for",
]

_LORA_FREE = " (adapter disabled under LoRA; cacheable: train.cache_reference)"

METHODS: dict[str, Method] = {
    "yao": Method(
        "yao",
        "Yao et al. 2023 (arXiv 2310.10683) eq. 1-4; Gundavarapu et al. 2024 (arXiv 2405.15152)",
        YaoStage,
        yao_terms,
        "original model's logits on normal data" + _LORA_FREE,
    ),
    "ga": Method(
        "ga",
        "Jang et al. 2023 (arXiv 2210.01504); Yao et al. 2023 'GA'",
        GradientAscentStage,
        ga_terms,
        "none",
    ),
    "graddiff": Method(
        "graddiff",
        "Liu et al. 2022 (arXiv 2203.12817); TOFU (arXiv 2401.06121)",
        GradDiffStage,
        graddiff_terms,
        "none",
    ),
    "npo": Method(
        "npo",
        "Zhang et al. 2024, NPO (arXiv 2404.05868) eq. 3",
        NpoStage,
        npo_terms,
        "original model's answer log-probs on forget data" + _LORA_FREE,
    ),
    "simnpo": Method(
        "simnpo", "Fan et al. 2024, SimNPO (arXiv 2410.07163) eq. 4", SimNpoStage, simnpo_terms, "none"
    ),
    "idk": Method(
        "idk", "Maini et al. 2024, TOFU (arXiv 2401.06121) 'IdK' fine-tuning", IdkStage, idk_terms, "none"
    ),
    "idk_dpo": Method(
        "idk_dpo",
        "Rafailov et al. 2023, DPO (arXiv 2305.18290) eq. 7 with TOFU IdK answers",
        IdkDpoStage,
        idk_dpo_terms,
        "original model's log-probs of refusal and forget answers" + _LORA_FREE,
    ),
    "rmu": Method(
        "rmu",
        "Li et al. 2024, WMDP/RMU (arXiv 2403.03218) §5 eq. 1-2",
        RmuStage,
        rmu_terms,
        "original model's layer-ℓ activations on normal data, forward up to layer ℓ only" + _LORA_FREE,
    ),
    "undial": Method(
        "undial",
        "Dong et al. 2025, UNDIAL (arXiv 2402.10052) eq. 2-3",
        UndialStage,
        undial_terms,
        "original model's logits on forget data" + _LORA_FREE,
    ),
}


def finetune_terms(reduction: Reduction = "mean") -> list[Term]:
    """Plain fine-tuning (the copyright case's alignment stage): NLL of the stage's answers."""
    return [Term("nll", "forget", 1.0, nll(reduction))]


def terms_for(stage: UnlearnCommon) -> list[Term]:
    """The weighted terms of an unlearning stage; zero-weight terms are dropped (they cost a pass)."""
    method = METHODS[stage.method]
    return [term for term in method.terms(stage) if term.weight != 0]
