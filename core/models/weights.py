"""Snapshots of the trainable weights and copying them back (checkpoints, selection, probes)."""

from __future__ import annotations

from typing import Any

import torch

from lethe.core.models.errors import ModelError


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The parameters that training changes (LoRA weights, or everything for full fine-tuning)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_(model: Any, weights: dict[str, torch.Tensor], source: str = "these weights") -> None:
    """Copy `weights` (as `trainable_state` gives them) into the model's parameters, in place; a
    name the model lacks means they were saved for another model or adapter (`source` says whose)."""
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise ModelError(f"{source} does not match the model: it has {unknown[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
