"""The original model the KL term and the probes compare with, without a second copy under LoRA."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from lethe.core.models import hidden
from lethe.core.models.lora import is_peft
from lethe.core.models.weights import load_trainable_


class Reference:
    """The original model the KL term compares with: the model as the unlearning stage found it.

    Under LoRA it is the same weights with the adapter disabled (no second copy in memory); for
    full fine-tuning it is a frozen deep copy taken before training. When an earlier stage of the
    job trained the adapter (the copyright case's fine-tuning), disabling it would give the base
    model instead, so `start` (the adapter weights the stage began from) is substituted for the
    trained ones in the reference's forward (`torch.func.functional_call`: the trained tensors are
    not touched, so the autograd graph of the step stays valid).
    """

    def __init__(self, model: Any, start: dict[str, torch.Tensor] | None = None) -> None:
        self._frozen = None if is_peft(model) else copy.deepcopy(model).eval().requires_grad_(False)
        self._model = model
        self._start = {n: t.detach().clone() for n, t in start.items()} if start and is_peft(model) else None

    @property
    def module(self) -> Any:
        """The network `logits` runs: the frozen copy, or the model itself (adapter disabled)."""
        return self._frozen if self._frozen is not None else self._model

    def _context(self) -> AbstractContextManager:
        if self._frozen is not None or self._start is not None:
            return nullcontext()
        return self._model.disable_adapter()

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reference logits [B, T, V], computed without dropout and without gradients."""
        target = self._frozen if self._frozen is not None else self._model
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        with _eval_mode(target), self._context():
            if self._start is not None:
                return torch.func.functional_call(target, self._start, args=(), kwargs=inputs).logits
            return target(**inputs).logits

    def forward_split(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layer: int | None,
        at_head: Callable[[torch.Tensor], Any] | None,
        **extra: torch.Tensor,
    ) -> tuple[Any, torch.Tensor | None]:
        """`hidden.forward_split` on the original model, under `torch.inference_mode` (no autograd
        bookkeeping at all): `at_head` runs inside the reference's context, so the output layer it
        applies is the original one; `extra` goes to the model (position_ids). Returned tensors are
        inference tensors: clone what must meet autograd."""
        target = self.module
        start = self._start

        def call(ids: torch.Tensor, att: torch.Tensor) -> Any:
            inputs = {"input_ids": ids, "attention_mask": att, **extra}
            if start is not None:
                return torch.func.functional_call(target, start, args=(), kwargs=inputs)
            return target(**inputs)

        with torch.inference_mode(), _eval_mode(target), self._context():
            return hidden.forward_split(call, target, input_ids, attention_mask, layer, at_head)


@contextmanager
def original_weights(model: Any, start: dict[str, torch.Tensor] | None = None) -> Iterator[Any]:
    """The model as unlearning found it, for evaluation while no autograd graph is alive: the
    adapter disabled, or (after an earlier training stage) the `start` weights copied in and the
    trained ones restored afterwards."""
    if start is None:
        with model.disable_adapter():
            yield model
        return
    params = dict(model.named_parameters())
    trained = {name: params[name].detach().clone() for name in start}
    load_trainable_(model, start, "the start weights")
    try:
        yield model
    finally:
        # into the parameters held above: the body may have merged the adapter away (merged_copy)
        with torch.no_grad():
            for name, value in trained.items():
                params[name].copy_(value)


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
