"""Reading one decoder layer's output, and stopping the forward pass there when nothing else is needed.

RMU steers the residual stream at the output of decoder layer ℓ. A forward hook on that layer
records its output; when no logits are needed the hook raises `_StopForward`, so neither the
trained model nor the frozen side runs the layers above ℓ, the final norm or the LM head
(algorithms.md §3.7: "a truncated forward suffices"). Gradients still flow: the recorded tensor
keeps its graph.

The same hook mechanism splits off the output layer (`forward_split`, `output_logits`): the forward
stops at the output layer's input, so the training step can apply the layer only at the positions
a loss reads, in chunks, instead of over every position of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
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


# ------------------------------------------------------------------ the output layer, split off
# logits held per chunk: 2^23 fp32 values (32 MB), e.g. 170 positions of a 49,152-token vocabulary
CHUNK_ELEMENTS = 2**23


def chunk_positions(module: Any, positions: int | None = None) -> int:
    """Positions per chunk of the output layer: `positions` if given, else CHUNK_ELEMENTS logits."""
    if positions is not None:
        return max(1, positions)
    return max(1, CHUNK_ELEMENTS // int(module.get_output_embeddings().weight.shape[0]))


def output_logits(module: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The model's output layer applied to final hidden states [..., D] -> logits [..., V].

    Run where the caller chooses (only at scored positions, in chunks) instead of inside the
    model's forward over every position. Gemma-2's soft-capping and Cohere's logit scale, which
    their forward applies after the layer, are applied here too.
    """
    logits = module.get_output_embeddings()(hidden)
    config = module.config
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, int | float) and not isinstance(scale, bool):
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def forward_split(
    call: Any,
    module: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int | None,
    at_head: Callable[[torch.Tensor], Any] | None,
) -> tuple[Any, torch.Tensor | None]:
    """Run `call(input_ids, attention_mask)` up to the output layer, which does not run.

    `at_head(h)` receives the final hidden states h [B, T, D] (the output layer's input) while the
    forward is still inside the caller's context (adapter disabled, weights substituted), so it can
    apply `output_logits(module, ...)` there; its result is returned. With `layer`, the output of
    that decoder layer [B, T, D] is returned too; with `at_head` None the pass stops at `layer`.
    Works through PEFT wrappers: the hook sits on the output layer itself.
    """
    if at_head is None:
        if layer is None:
            raise ValueError("forward_split needs a layer to stop at, or at_head")
        return None, forward(call, module, input_ids, attention_mask, layer, need_logits=False)[1]
    head = module.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(module).__name__} has no output layer to split off")
    found: dict[str, Any] = {}
    busy = [False]

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        if busy[0]:  # at_head applying the output layer itself
            return
        busy[0] = True
        try:
            found["head"] = at_head(args[0])
        finally:
            busy[0] = False
        raise _StopForward

    handle = head.register_forward_pre_hook(hook)
    with ExitStack() as stack:
        stack.callback(handle.remove)
        captured = stack.enter_context(_capture(module, layer, stop=False)) if layer is not None else {}
        try:
            call(input_ids, attention_mask)
        except _StopForward:
            pass
    if "head" not in found:
        raise RuntimeError(f"the output layer of {type(module).__name__} never ran: cannot split it off")
    return found["head"], captured.get("hidden")
