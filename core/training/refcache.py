"""What the original model says about a micro-batch's rows: computed live, or read from a cache.

`LiveReference` runs one no-grad forward of the original model (`models.Reference`: the adapter
disabled under LoRA, a frozen copy otherwise) over the rows of every kind a term needs, stopping
at the steered layer when only activations are needed. `CachedReference` answers the same
question from outputs computed once before training (`train.cache_reference`): the reference is
fixed and so are the rows (rows.py lists them in advance), so a step then runs no reference
forward at all. Cached values are stored per row key, for answer positions only (log-probs,
logits) or real tokens only (activations), and scattered back into the batch's padded layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lethe.core.data.tokens import collate, encode, pad_id_of
from lethe.core.evaluation.runtime import batches
from lethe.core.methods import RefNeed, Rows
from lethe.core.methods.losses import shift_labels, token_logprobs
from lethe.core.models import hidden as hidden_states
from lethe.core.models.reference import Reference
from lethe.core.spec.fields import PromptFormat
from lethe.core.training.rows import Row

log = logging.getLogger(__name__)
Wanted = dict[Rows, set[RefNeed]]


@dataclass
class RefOutputs:
    """The reference's outputs on one kind of rows: logp [b, T-1], logits [b, T-1, V], hidden [b, T, D]."""

    logp: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


class ReferenceSource(Protocol):
    def outputs(
        self,
        batch: dict[str, torch.Tensor],
        wanted: Wanted,
        slices: dict[Rows, slice],
        keys: dict[Rows, list[str]] | None,
        layer: int | None,
    ) -> dict[Rows, RefOutputs]: ...


class LiveReference:
    """One no-grad reference forward per micro-batch, over the rows that need it."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    def outputs(
        self,
        batch: dict[str, torch.Tensor],
        wanted: Wanted,
        slices: dict[Rows, slice],
        keys: dict[Rows, list[str]] | None,
        layer: int | None,
    ) -> dict[Rows, RefOutputs]:
        kinds = [k for k in slices if wanted.get(k)]
        if not kinds:
            return {}
        device = batch["input_ids"].device
        index = torch.cat([torch.arange(slices[k].start, slices[k].stop) for k in kinds]).to(device)
        needs = set().union(*(wanted[k] for k in kinds))
        logits, hidden = hidden_states.forward(
            self.reference.logits,
            self.reference.module,
            batch["input_ids"][index],
            batch["attention_mask"][index],
            layer if "hidden" in needs else None,
            need_logits=bool(needs & {"logp", "logits"}),
        )
        logp = (
            token_logprobs(logits, batch["labels"][index])[0]
            if logits is not None and "logp" in needs
            else None
        )
        out, offset = {}, 0
        for kind in kinds:
            part = slice(offset, offset + slices[kind].stop - slices[kind].start)
            offset = part.stop
            out[kind] = RefOutputs(
                logp=logp[part] if logp is not None and "logp" in wanted[kind] else None,
                logits=logits[part, :-1] if logits is not None and "logits" in wanted[kind] else None,
                hidden=hidden[part] if hidden is not None and "hidden" in wanted[kind] else None,
            )
        return out


class CachedReference:
    """Reference outputs computed before training, looked up by row key."""

    def __init__(self, store: dict[str, dict[str, torch.Tensor]]) -> None:
        self.store = store

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for entry in self.store.values() for t in entry.values())

    def _entry(self, key: str, need: str) -> torch.Tensor:
        try:
            return self.store[key][need]
        except KeyError:
            raise KeyError(
                f"no cached reference {need} for row {key!r}: the cache was built for "
                "other rows (data, seed or batch size changed)"
            ) from None

    def outputs(
        self,
        batch: dict[str, torch.Tensor],
        wanted: Wanted,
        slices: dict[Rows, slice],
        keys: dict[Rows, list[str]] | None,
        layer: int | None,
    ) -> dict[Rows, RefOutputs]:
        if keys is None:
            raise ValueError("a cached reference needs the row keys of the batch")
        return {
            kind: self._kind(batch, slices[kind], keys[kind], needs)
            for kind, needs in wanted.items()
            if needs and kind in slices
        }

    def _kind(
        self, batch: dict[str, torch.Tensor], sl: slice, keys: list[str], needs: set[RefNeed]
    ) -> RefOutputs:
        _, mask = shift_labels(batch["labels"][sl])  # [b, T-1]: where the cached values go
        lengths = batch["attention_mask"][sl].sum(dim=1).tolist()
        out = RefOutputs()
        for need in needs:
            rows = [self._entry(key, need) for key in keys]
            if need == "hidden":
                full = rows[0].new_zeros((len(keys), batch["input_ids"].shape[1], rows[0].shape[-1]))
                for i, (row, n) in enumerate(zip(rows, lengths, strict=False)):
                    full[i, :n] = row
            else:
                full = rows[0].new_zeros((*mask.shape, *rows[0].shape[1:]))
                for i, row in enumerate(rows):
                    if row.shape[0] != int(mask[i].sum()):
                        raise ValueError(
                            f"cached reference for row {keys[i]!r} has {row.shape[0]} answer "
                            f"tokens, the batch has {int(mask[i].sum())}: stale cache"
                        )
                    full[i, mask[i]] = row
            setattr(out, need, full.to(batch["input_ids"].device))
        return out


def as_source(reference: Reference | ReferenceSource | None) -> ReferenceSource | None:
    """Accept a plain `Reference` (live) wherever a reference source is expected."""
    return LiveReference(reference) if isinstance(reference, Reference) else reference


def build_cache(
    source: ReferenceSource,
    tokenizer: Any,
    fmt: PromptFormat,
    rows: dict[Rows, list[Row]],
    wanted: Wanted,
    layer: int | None,
    batch_size: int,
    device: torch.device,
) -> CachedReference:
    """Run the reference once over `rows` (the distinct rows of a whole run) and keep what the
    terms need of each, on the CPU. Returns the cache the training steps read instead."""
    store: dict[str, dict[str, torch.Tensor]] = {}
    for kind, kind_rows in rows.items():
        for chunk in batches(kind_rows, batch_size):
            encoded = [encode(tokenizer, r.prompt, r.response, fmt, example_id=r.key) for r in chunk]
            batch = {k: v.to(device) for k, v in collate(encoded, pad_id_of(tokenizer)).items()}
            out = source.outputs(batch, {kind: wanted[kind]}, {kind: slice(0, len(chunk))}, None, layer)[kind]
            _, mask = shift_labels(batch["labels"])
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for i, row in enumerate(chunk):
                entry = {}
                if out.logp is not None:
                    entry["logp"] = out.logp[i][mask[i]].cpu()
                if out.logits is not None:
                    entry["logits"] = out.logits[i][mask[i]].cpu()
                if out.hidden is not None:
                    entry["hidden"] = out.hidden[i, : lengths[i]].cpu()
                store[row.key] = entry
    cache = CachedReference(store)
    log.info(
        "reference cached for %d rows (%.1f MB); steps run no reference forward",
        len(store),
        cache.nbytes() / 2**20,
    )
    return cache
