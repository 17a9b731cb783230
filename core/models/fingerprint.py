"""A hash of a model's weights, independent of how they were stored.

`weights_sha256` hashes the state dict: for each tensor in order of name, its name, dtype, shape
and raw bytes. The same weights give the same hash whether they came from safetensors, a GGUF
file, a hub checkpoint or code (the tiny built-in models), so a certificate can name exactly the
base model that was unlearned.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from lethe.core.spec.fields import ModelSpec

MODEL_CARD = "model.json"


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every state-dict tensor, by sorted name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().contiguous().reshape(-1).cpu()
        digest.update(f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_card(spec: ModelSpec, model: torch.nn.Module) -> dict[str, Any]:
    """What the run folder records about its base model (before any adapter is attached).

    `config` is the model's whole configuration: a built-in has no checkpoint anyone else can
    download, so this (with the weights hash) is what describes it outside this machine.
    """
    config = getattr(model, "config", None)
    return {
        "reference": spec.name,
        "revision": spec.revision,
        "dtype": spec.dtype,
        "architecture": getattr(config, "model_type", None),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": weights_sha256(model),
        "weights_hash": "sha256 over (name, dtype, shape, bytes) of each state-dict tensor, by name",
        "config": config.to_dict() if config is not None else None,
    }
