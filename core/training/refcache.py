"""What the original model says about a micro-batch's rows: computed live, or read from a cache.

`LiveReference` runs one forward of the original model (`models.Reference`: the adapter disabled
under LoRA, a frozen copy otherwise) per kind of rows that a term needs, under inference_mode,
over the same per-kind batches as the trained model, stopping at the steered layer when only
activations are needed and applying the output layer at answer positions only. `CachedReference`
answers the same question from outputs computed once before training (`train.cache_reference`):
the reference is fixed and so are the rows (rows.py lists them in advance), so a step then runs no
reference forward at all. Cached values are stored per row key, for answer positions only
(log-probs, logits) or real tokens only (activations).

Layouts (b rows of one kind, t its width, N its scored positions in row-major order): logp
[b, t-1] (0 off the answer), logits [N, V], hidden [b, t, D] (0 on padding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lethe.core.data.tokens import collate, encode, pad_id_of
from lethe.core.evaluation.runtime import batches
from lethe.core.methods import RefNeed, Rows
from lethe.core.methods.losses import position_logprobs, shift_labels
from lethe.core.models import hidden as hidden_states
from lethe.core.models.reference import Reference
from lethe.core.spec.fields import PromptFormat
from lethe.core.training.packing import PROMPT_KINDS, pack, shares_prompts, worth_packing
from lethe.core.training.rows import Row

log = logging.getLogger(__name__)
Wanted = dict[Rows, set[RefNeed]]
Batch = dict[str, torch.Tensor]


@dataclass
class RefOutputs:
    """The reference's outputs on one kind of rows: logp [b, t-1], logits [N, V], hidden [b, t, D]."""

    logp: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def kind_batches(batch: Batch, slices: dict[Rows, slice]) -> dict[Rows, Batch]:
    """Each kind's rows of a right-padded batch, cut to that kind's own longest row."""
    out: dict[Rows, Batch] = {}
    for kind, rows in slices.items():
        width = int(batch["attention_mask"][rows].sum(dim=1).max())
        out[kind] = {name: value[rows, :width] for name, value in batch.items()}
    return out


class ReferenceSource(Protocol):
    def outputs(
        self, kinds: dict[Rows, Batch], wanted: Wanted, keys: dict[Rows, list[str]] | None, layer: int | None
    ) -> dict[Rows, RefOutputs]: ...


class LiveReference:
    """One inference-mode reference forward per kind of rows that needs it."""

    def __init__(self, reference: Reference, chunk: int | None = None) -> None:
        self.reference = reference
        # positions per output-layer chunk when only log-probs are wanted
        self.chunk = hidden_states.chunk_positions(reference.module, chunk)

    def outputs(
        self, kinds: dict[Rows, Batch], wanted: Wanted, keys: dict[Rows, list[str]] | None, layer: int | None
    ) -> dict[Rows, RefOutputs]:
        asked = {kind: needs for kind, needs in wanted.items() if needs and kind in kinds}
        # the same batching as the trained model: rows that share a forget prompt run packed
        shared = {k: kinds[k] for k in asked if k in PROMPT_KINDS and "hidden" not in asked[k]}
        out: dict[Rows, RefOutputs] = {}
        if len(shared) > 1 and shares_prompts(self.reference.module) and worth_packing(shared):
            out = self._packed(shared, asked)
        return {
            kind: out[kind] if kind in out else self._kind(kinds[kind], needs, layer)
            for kind, needs in asked.items()
        }

    def _head(self, h: torch.Tensor, y: torch.Tensor, needs: set[RefNeed]) -> dict[str, torch.Tensor]:
        """Logits [N, V] and/or log p(y) [N] at N positions; called inside the reference's context,
        so the output layer applied is the original one. Log-probs alone are taken in chunks."""
        module = self.reference.module
        if "logits" in needs:
            logits = hidden_states.output_logits(module, h)
            return {"logits": logits, **({"logp": position_logprobs(logits, y)} if "logp" in needs else {})}
        parts = [
            position_logprobs(
                hidden_states.output_logits(module, h[i : i + self.chunk]), y[i : i + self.chunk]
            )
            for i in range(0, h.shape[0], self.chunk)
        ]
        return {"logp": torch.cat(parts) if parts else h.new_zeros(0)}

    def _kind(self, batch: Batch, needs: set[RefNeed], layer: int | None) -> RefOutputs:
        targets, mask = shift_labels(batch["labels"])
        head, hidden = self.reference.forward_split(
            batch["input_ids"],
            batch["attention_mask"],
            layer if "hidden" in needs else None,
            (lambda h: self._head(h[:, :-1][mask], targets[mask], needs))
            if needs & {"logp", "logits"}
            else None,
        )
        return _outputs(head, mask, needs, hidden)

    def _packed(self, kinds: dict[Rows, Batch], asked: Wanted) -> dict[Rows, RefOutputs]:
        """One forward over `kinds` packed by prompt (packing.py), as the trained model's."""
        dtype = next(self.reference.module.parameters()).dtype
        packed = pack(kinds, dtype if dtype.is_floating_point else torch.float32)
        device = next(iter(kinds.values()))["input_ids"].device
        inputs = {name: value.to(device) for name, value in packed.inputs.items()}
        shifted = {kind: shift_labels(batch["labels"]) for kind, batch in kinds.items()}

        def at_head(h: torch.Tensor) -> dict[Rows, dict[str, torch.Tensor]]:
            found = {}
            for kind, (seq, pos) in packed.where.items():
                targets, mask = shifted[kind]
                found[kind] = self._head(h[seq.to(device), pos.to(device)], targets[mask], asked[kind])
            return found

        heads, _ = self.reference.forward_split(
            inputs["input_ids"], inputs["attention_mask"], None, at_head, position_ids=inputs["position_ids"]
        )
        return {kind: _outputs(heads[kind], shifted[kind][1], asked[kind], None) for kind in kinds}


def _outputs(
    head: dict[str, torch.Tensor] | None, mask: torch.Tensor, needs: set[RefNeed], hidden: torch.Tensor | None
) -> RefOutputs:
    """RefOutputs in their layouts; clones, as inference tensors may not be saved for backward."""
    out = RefOutputs(hidden=hidden.clone() if hidden is not None else None)
    if head is not None:
        if "logp" in needs:
            out.logp = torch.zeros(mask.shape, device=mask.device).masked_scatter(mask, head["logp"].float())
        if "logits" in needs:
            out.logits = head["logits"].clone()
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
        self, kinds: dict[Rows, Batch], wanted: Wanted, keys: dict[Rows, list[str]] | None, layer: int | None
    ) -> dict[Rows, RefOutputs]:
        if keys is None:
            raise ValueError("a cached reference needs the row keys of the batch")
        return {
            kind: self._kind(kinds[kind], keys[kind], needs)
            for kind, needs in wanted.items()
            if needs and kind in kinds
        }

    def _kind(self, batch: Batch, keys: list[str], needs: set[RefNeed]) -> RefOutputs:
        _, mask = shift_labels(batch["labels"])  # [b, t-1]: where the cached values go
        counts = mask.sum(dim=1).tolist()
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        device = batch["input_ids"].device
        out = RefOutputs()
        for need in needs:
            rows = [self._entry(key, need) for key in keys]
            if need == "hidden":
                full = rows[0].new_zeros((len(keys), batch["input_ids"].shape[1], rows[0].shape[-1]))
                for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
                    full[i, :n] = row
                out.hidden = full.to(device)
                continue
            for key, row, n in zip(keys, rows, counts, strict=True):
                if row.shape[0] != n:
                    raise ValueError(
                        f"cached reference for row {key!r} has {row.shape[0]} answer "
                        f"tokens, the batch has {n}: stale cache"
                    )
            flat = torch.cat(rows).to(device)
            if need == "logits":
                out.logits = flat
            else:
                out.logp = flat.new_zeros(mask.shape).masked_scatter(mask, flat)
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
    templates = fmt.texts()
    for kind, kind_rows in rows.items():
        for chunk in batches(kind_rows, batch_size):
            encoded = [
                encode(tokenizer, r.prompt, r.response, fmt, example_id=r.key, template=templates[r.template])
                for r in chunk
            ]
            batch = {k: v.to(device) for k, v in collate(encoded, pad_id_of(tokenizer)).items()}
            out = source.outputs({kind: batch}, {kind: wanted[kind]}, None, layer)[kind]
            _, mask = shift_labels(batch["labels"])
            counts = mask.sum(dim=1).tolist()
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            logits = out.logits.split(counts) if out.logits is not None else None
            for i, row in enumerate(chunk):
                entry = {}
                if out.logp is not None:
                    entry["logp"] = out.logp[i][mask[i]].cpu()
                if logits is not None:
                    entry["logits"] = logits[i].cpu()
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
