"""Which rows each micro-batch holds: a pure function of (data, seed, micro-batch number).

Data order, random answers and refusal answers depend only on the seed and a row's position in
the data stream, so a run resumed from a checkpoint sees exactly the rows an uninterrupted run
would, batch × accumulation splits draw alike, and the rows of a whole run can be listed before
it starts (the reference cache does that). Each row carries a key naming its example and answer,
by which cached reference outputs are found.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lethe.core.data.examples import Example
from lethe.core.data.tokens import Encoded, encode
from lethe.core.methods import Rows, Term
from lethe.core.spec.fields import PromptFormat


class Row(NamedTuple):
    key: str  # the same example with the same answer in the same format always has the same key
    prompt: str
    response: str
    template: int = 0  # which of the format's templates (`PromptFormat.texts()`) writes the row


@dataclass
class StageData:
    """Examples for one stage: `forget` is the stage's main data (the fine-tuning data too)."""

    forget: list[Example]
    normal: list[Example] = field(default_factory=list)
    random_answers: int = 1
    refusals: list[str] = field(default_factory=list)  # answers of `idk` rows
    formats: int = 1  # templates the rows are written in (format.template + train_templates)


def mix_seed(*parts: int) -> int:
    """A deterministic 31-bit seed from integers (stable across processes, unlike str hashes)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % 2_147_483_647
    return value


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int) -> tuple[int, ...]:
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist())


def epoch_order(n: int, seed: int, salt: int, index: int, count: int) -> list[int]:
    """Items index..index+count-1 of an endless stream of shuffled passes over range(n).

    Each pass is a permutation seeded by (seed, salt, pass number): reshuffled every epoch (the
    reference code never shuffled its forget set) and reproducible from the index alone.
    """
    out = []
    for position in range(index, index + count):
        epoch, offset = divmod(position, n)
        out.append(_permutation(n, mix_seed(seed, salt, epoch))[offset])
    return out


def row_kinds(terms: Iterable[Term]) -> set[Rows]:
    """Every kind of row the terms score, paired kinds included."""
    return {t.rows for t in terms} | {t.pair for t in terms if t.pair is not None}


def micro_batch_rows(
    data: StageData, kinds: set[Rows], micro: int, batch_size: int, seed: int
) -> dict[Rows, list[Row]]:
    """The rows of each kind in `kinds` for micro-batch number `micro`.

    Random rows pair each forget prompt with `random_answers` normal answers drawn independently
    per prompt (the reference code reused the same 5 answers for the whole batch); `idk` rows pair
    it with one refusal, drawn the same way, so row b of `forget` and of `idk` share a prompt.
    """
    start = micro * batch_size
    order = epoch_order(len(data.forget), seed, 1, start, batch_size)
    forget = [data.forget[i] for i in order]
    # one format per stream position; the rows built on one forget prompt share it
    styles = _formats(data, seed, 7, start, len(forget))
    rows: dict[Rows, list[Row]] = {}
    if "forget" in kinds:
        rows["forget"] = [
            _row(f"forget:{e.id}", e.prompt, e.response, t) for e, t in zip(forget, styles, strict=True)
        ]
    if "normal" in kinds:
        normal = [data.normal[i] for i in epoch_order(len(data.normal), seed, 2, start, batch_size)]
        normal_styles = _formats(data, seed, 8, start, len(normal))
        rows["normal"] = [
            _row(f"normal:{e.id}", e.prompt, e.response, t)
            for e, t in zip(normal, normal_styles, strict=True)
        ]
    if "random" in kinds:
        # keyed by stream position, not micro-batch, so batch x accumulation splits draw alike
        draws = [random.Random(mix_seed(seed, 3, start + i)) for i in range(len(forget))]
        picks = [
            (e, rng.choice(data.normal), t)
            for e, rng, t in zip(forget, draws, styles, strict=True)
            for _ in range(data.random_answers)
        ]
        rows["random"] = [_row(f"random:{e.id}:{n.id}", e.prompt, n.response, t) for e, n, t in picks]
    if "idk" in kinds:
        if not data.refusals:
            raise ValueError("idk rows need refusal answers (StageData.refusals is empty)")
        picks_idk = [
            random.Random(mix_seed(seed, 5, start + i)).randrange(len(data.refusals))
            for i in range(len(forget))
        ]
        rows["idk"] = [
            _row(f"idk:{e.id}:{k}", e.prompt, data.refusals[k], t)
            for e, k, t in zip(forget, picks_idk, styles, strict=True)
        ]
    return rows


def _formats(data: StageData, seed: int, salt: int, start: int, count: int) -> list[int]:
    """The template of each of `count` rows from stream position `start` (0 with one format)."""
    if data.formats == 1:
        return [0] * count
    return [random.Random(mix_seed(seed, salt, start + i)).randrange(data.formats) for i in range(count)]


def _row(key: str, prompt: str, response: str, template: int) -> Row:
    # the format is part of the key: the reference's outputs differ by format
    return Row(key if template == 0 else f"{key}@{template}", prompt, response, template)


def encode_rows(
    tokenizer: object, fmt: PromptFormat, rows: dict[Rows, list[Row]]
) -> tuple[list[Encoded], dict[Rows, slice], dict[Rows, list[str]]]:
    """Tokenise every row; return them packed, the slice of each kind, and each kind's row keys."""
    encoded: list[Encoded] = []
    slices: dict[Rows, slice] = {}
    keys: dict[Rows, list[str]] = {}
    templates = fmt.texts()
    for kind, kind_rows in rows.items():
        start = len(encoded)
        encoded += [
            encode(tokenizer, r.prompt, r.response, fmt, example_id=r.key, template=templates[r.template])
            for r in kind_rows
        ]
        slices[kind] = slice(start, len(encoded))
        keys[kind] = [r.key for r in kind_rows]
    return encoded, slices, keys


def planned_rows(
    data: StageData, kinds: set[Rows], micro_batches: int, batch_size: int, seed: int
) -> dict[Rows, list[Row]]:
    """The distinct rows of each kind that micro-batches 0..micro_batches-1 will hold."""
    found: dict[Rows, dict[str, Row]] = {kind: {} for kind in kinds}
    for micro in range(micro_batches):
        for kind, kind_rows in micro_batch_rows(data, kinds, micro, batch_size, seed).items():
            if kind in found:
                found[kind].update((r.key, r) for r in kind_rows)
    return {kind: list(rows.values()) for kind, rows in found.items()}
