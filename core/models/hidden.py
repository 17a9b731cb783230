"""Reading one decoder layer's output, and stopping the forward pass there when nothing else is needed.

RMU steers the residual stream at the output of decoder layer ℓ. A forward hook on that layer
records its output; when no logits are needed the hook raises `_StopForward`, so neither the
trained model nor the frozen side runs the layers above ℓ, the final norm or the LM head
(algorithms.md §3.7: "a truncated forward suffices"). Gradients still flow: the recorded tensor
keeps its graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# WMDP's RMU steers layer 7 of zephyr-7b's 32; with no layer given, the same relative depth.
DEFAULT_RELATIVE_DEPTH = 7 / 32


class _StopForward(Exception):
    """Raised by the capture hook to end a forward pass at the steered layer."""


def num_layers(model: Any) -> int:
    return int(model.config.num_hidden_layers)  # gpt2's n_layer is mapped to this name too


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's list of decoder layers, found by length (works through peft wrappers and for
    llama/mistral/qwen2 `model.layers`, opt `model.decoder.layers`, gpt2 `transformer.h`, ...)."""
    n = num_layers(model)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} decoder layers of {type(model).__name__}")


def resolve_layer(model: Any, layer: int | None) -> int:
    """The index of the steered layer: `layer` if given, else WMDP's relative depth."""
    n = num_layers(model)
    index = max(0, round(n * DEFAULT_RELATIVE_DEPTH)) if layer is None else layer
    if not 0 <= index < n:
        raise ValueError(f"layer {index} does not exist: the model has decoder layers 0..{n - 1}")
    return index


@contextmanager
def _capture(model: Any, layer: int, stop: bool) -> Iterator[dict[str, torch.Tensor]]:
    found: dict[str, torch.Tensor] = {}

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        found["hidden"] = output[0] if isinstance(output, tuple) else output
        if stop:
            raise _StopForward

    handle = decoder_layers(model).__getitem__(layer).register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


def forward(
    call: Any,
    module: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int | None,
    need_logits: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Run `call(input_ids, attention_mask) -> logits` and return (logits [B, T, V] or None,
    output of decoder layer `layer` of `module` [B, T, D] or None).

    `call` is the model's forward (or the reference's no-grad forward); `module` is the network it
    runs, whose layer is hooked. Without `need_logits` the pass stops at the layer.
    """
    if layer is None:
        return call(input_ids, attention_mask), None
    with _capture(module, layer, stop=not need_logits) as found:
        try:
            logits = call(input_ids, attention_mask)
        except _StopForward:
            logits = None
    return logits, found["hidden"]
