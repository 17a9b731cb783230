"""Small helpers shared by the model-running parts of evaluation (no metric logic here)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@contextmanager
def inference(model: Any) -> Iterator[None]:
    """Run `model` in eval mode without gradients; give back its previous train/eval mode."""
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_device(model: Any) -> torch.device:
    """The device of the model's first parameter (where input tensors must go)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of `items` of at most `size` elements."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
