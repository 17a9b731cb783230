"""Rows that answer one prompt share its forward: one sequence per distinct prompt, answers as branches.

Row b of `forget`, its K `random` rows and its `idk` row answer the same forget prompt in the same
format (rows.py), so run as separate rows the prompt goes through the model K + 2 times. Packed,
each distinct prompt is one sequence: the prompt once, then every answer to it as a branch that
attends to the prompt and, causally, to itself only (a 4D attention mask), with position ids that
restart after the prompt for each branch. Every answer token then sees exactly the context it
would see as a separate row, so losses and gradients are those of separate rows (tested), and the
gradient through the shared prompt is the sum over its answers, as it would be. The prompt's last
position predicts the first token of every branch.

Architectures whose forward takes a custom 4D mask and position ids as given (llama-style); others
run one batch per kind instead (`shares_prompts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lethe.core.data.tokens import IGNORE_INDEX
from lethe.core.methods import Rows

Batch = dict[str, torch.Tensor]
# the kinds whose row b answers forget prompt b (base.py): the ones worth packing together
PROMPT_KINDS: frozenset[str] = frozenset({"forget", "random", "idk"})
# model types whose attention uses a given 4D mask and position ids unchanged (tested on tiny-llama)
PACKABLE_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def shares_prompts(model: Any) -> bool:
    """Whether `model` runs packed prompts correctly: a llama-style architecture whose attention
    applies a dense 4D mask (flash-attention kernels take no such mask)."""
    config = model.config
    attention = getattr(config, "_attn_implementation", None) or "eager"
    return getattr(config, "model_type", "") in PACKABLE_MODELS and attention in ("sdpa", "eager")


@dataclass
class Packed:
    """inputs: input_ids, position_ids [S, L] and a 4D additive attention_mask [S, 1, L, L];
    where: for each kind, (sequence, position) [N] of the hidden state that predicts each of its
    scored tokens, in the order of `shift_labels`'s mask over that kind's rows (row-major)."""

    inputs: Batch
    where: dict[Rows, tuple[torch.Tensor, torch.Tensor]]


def _answers(batch: Batch) -> list[tuple[tuple[int, ...], list[int]]]:
    """(prompt ids, answer ids) of each row; the answer is the labelled tail (at least token 1:
    nothing predicts a row's first token)."""
    out = []
    lengths = batch["attention_mask"].sum(1).tolist()
    for ids, labels, n in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), lengths, strict=True):
        start = next((j for j in range(n) if labels[j] != IGNORE_INDEX), n)
        start = max(start, 1)
        out.append((tuple(ids[:start]), ids[start:n]))
    return out


def worth_packing(kinds: dict[Rows, Batch]) -> bool:
    """True when some prompt is shared by two rows: otherwise packing saves nothing."""
    prompts = [p for batch in kinds.values() for p, _ in _answers(batch)]
    return len(set(prompts)) < len(prompts)


def pack(kinds: dict[Rows, Batch], dtype: torch.dtype) -> Packed:
    """One sequence per distinct prompt over the rows of `kinds`; see the module docstring."""
    trees: dict[tuple[int, ...], list[tuple[Rows, int, list[int]]]] = {}
    for kind, batch in kinds.items():
        for row, (prompt, answer) in enumerate(_answers(batch)):
            trees.setdefault(prompt, []).append((kind, row, answer))
    sources: dict[Rows, dict[int, list[tuple[int, int]]]] = {kind: {} for kind in kinds}
    sequences = []
    for s, (prompt, branches) in enumerate(trees.items()):
        ids, pos, seg = list(prompt), list(range(len(prompt))), [0] * len(prompt)
        for branch, (kind, row, answer) in enumerate(branches, start=1):
            at = len(ids)
            # the prompt's last token predicts the answer's first; each answer token the next
            predictors = [len(prompt) - 1, *range(at, at + len(answer) - 1)] if answer else []
            sources[kind][row] = [(s, p) for p in predictors]
            ids += answer
            pos += range(len(prompt), len(prompt) + len(answer))
            seg += [branch] * len(answer)
        sequences.append((ids, pos, seg))
    inputs = _tensors(sequences, dtype)
    where = {}
    for kind, rows in sources.items():
        flat = [at for row in sorted(rows) for at in rows[row]]
        index = torch.tensor(flat, dtype=torch.long).reshape(-1, 2)
        where[kind] = (index[:, 0], index[:, 1])
    return Packed(inputs, where)


def _tensors(sequences: list[tuple[list[int], list[int], list[int]]], dtype: torch.dtype) -> Batch:
    width = max(len(ids) for ids, _, _ in sequences)
    input_ids = torch.zeros((len(sequences), width), dtype=torch.long)  # padding: any id, unread
    position_ids = torch.zeros((len(sequences), width), dtype=torch.long)
    segment = torch.full((len(sequences), width), -1, dtype=torch.long)  # -1: padding
    for i, (ids, pos, seg) in enumerate(sequences):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        position_ids[i, : len(ids)] = torch.tensor(pos)
        segment[i, : len(ids)] = torch.tensor(seg)
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (query >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool) & (query < 0)  # padding sees itself: no empty row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask[:, None]}
