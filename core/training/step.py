"""The loss of one micro-batch: each prompt through the model once, the output layer only where read.

Each kind of rows (forget, random, normal, idk) is cut from the collated batch at its own width
(rows are right-padded, so its longest row), instead of every row being padded to the longest row
of any kind. On llama-style models the kinds that answer the forget prompts (forget, random, idk)
run as one packed forward, each distinct prompt once with its answers as branches (packing.py).
The trained model runs to the input of its output layer (or stops at the steered layer when every
term reads activations); the output layer then runs only at the answer positions, the only
positions a loss reads, in chunks of positions, all but the last recomputed in backward, so
full-vocabulary logits exist for one chunk at a time, never for every position at once. The
reference runs under inference_mode with the same batching (packed where the trained model is),
or not at all when its outputs are cached. Groups of kinds that no term links are back-propagated
one after the other (`backward=`), so only one group's activations are alive at a time. Each term
sees its rows as `TermInputs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from lethe.core.methods import Rows, Term, TermInputs
from lethe.core.methods.losses import position_logprobs, sequence_nll, shift_labels
from lethe.core.models import hidden as hidden_states
from lethe.core.models.reference import Reference
from lethe.core.training.packing import PROMPT_KINDS, pack, shares_prompts, worth_packing
from lethe.core.training.refcache import ReferenceSource, RefOutputs, Wanted, as_source, kind_batches

Batch = dict[str, torch.Tensor]


def wanted_reference(terms: list[Term]) -> Wanted:
    """What each kind of rows needs of the reference (a paired kind needs what its term needs)."""
    wanted: Wanted = {}
    for term in terms:
        if term.reference is None:
            continue
        for kind in (term.rows, term.pair):
            if kind is not None:
                wanted.setdefault(kind, set()).add(term.reference)
    return wanted


def steered_layer(model: Any, terms: list[Term]) -> int | None:
    """The decoder layer whose output the terms read, or None when they read only logits."""
    layers = {
        hidden_states.resolve_layer(model, t.layer)
        for t in terms
        if t.reads == "hidden" or t.reference == "hidden"
    }
    if len(layers) > 1:
        raise ValueError(f"a method's terms must read one layer, not {sorted(layers)}")
    return layers.pop() if layers else None


def position_values(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    targets: torch.Tensor,
    want_logp: bool,
    losses: list[tuple[Callable[..., torch.Tensor], torch.Tensor | None]],
    chunk: int,
) -> list[torch.Tensor]:
    """Per-position values at N scored positions, the output layer applied chunk by chunk.

    hidden [N, D] (final hidden states), targets [N]; losses: (position loss, the reference's
    logits [N, V] or None). Returns [N] tensors: log p(target) first if `want_logp`, then each
    loss's values. When there are several chunks, all but the last are checkpointed, so that
    backward recomputes their logits instead of keeping every chunk's.
    """

    def run(h: torch.Tensor, y: torch.Tensor, *refs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        logits = head(h).float()  # one fp32 copy shared by every value of the chunk
        out = [position_logprobs(logits, y)] if want_logp else []
        out += [fn(logits, ref, y) for (fn, _), ref in zip(losses, refs, strict=True)]
        return tuple(out)

    n = hidden.shape[0]
    if n == 0:  # no answer token in these rows (all truncated away): nothing to score
        return [hidden.new_zeros(0, dtype=torch.float32) for _ in range(int(want_logp) + len(losses))]
    several = n > chunk and torch.is_grad_enabled()
    pieces = []
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        refs = [ref[part] if ref is not None else None for _, ref in losses]
        # the last chunk keeps its logits for backward: one chunk's worth, and one less recompute
        if several and start + chunk < n:
            pieces.append(checkpoint(run, hidden[part], targets[part], *refs, use_reentrant=False))
        else:
            pieces.append(run(hidden[part], targets[part], *refs))
    return [torch.cat(column) for column in zip(*pieces, strict=True)]


def _scatter(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] values at the True entries of mask [b, T-1] (row-major), zero elsewhere."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def kind_inputs(
    model: Any,
    terms: list[Term],
    kind: Rows,
    batch: Batch,
    ref: RefOutputs | None,
    layer: int | None,
    chunk: int,
    gathered: torch.Tensor | None = None,
) -> tuple[TermInputs, dict[str, torch.Tensor]]:
    """One forward of the trained model over one kind's rows (unless `gathered` already holds the
    final hidden states [N, D] at its scored positions, from a packed forward); its `TermInputs`
    and the values of each of its terms' position losses [b, T-1], by term name."""
    ref = ref or RefOutputs()
    touching = [t for t in terms if kind in (t.rows, t.pair)]
    positional = [t for t in terms if t.rows == kind and t.position_loss is not None]
    # forget rows always get log-probs when the output layer runs: `forget_nll` is logged
    want_logp = any(t.reads == "logits" for t in terms) and (
        kind == "forget" or any(t.reads == "logits" and t.position_loss is None for t in touching)
    )
    reads_layer = any(t.reads == "hidden" for t in touching)
    targets, mask = shift_labels(batch["labels"])
    hidden = None
    if gathered is None:
        final, hidden = hidden_states.forward_split(
            lambda ids, att: model(input_ids=ids, attention_mask=att),
            model,
            batch["input_ids"],
            batch["attention_mask"],
            layer if reads_layer else None,
            (lambda h: h) if want_logp or positional else None,
        )
        gathered = final[:, :-1][mask] if final is not None else None
    values: list[torch.Tensor] = []
    if gathered is not None:
        values = position_values(
            lambda h: hidden_states.output_logits(model, h),
            gathered,
            targets[mask],
            want_logp,
            [(t.position_loss, ref.logits) for t in positional if t.position_loss is not None],
            chunk,
        )
    logp = _scatter(values.pop(0), mask) if want_logp else None
    positions = {t.name: _scatter(v, mask) for t, v in zip(positional, values, strict=True)}
    inputs = TermInputs(
        logp=logp,
        mask=mask,
        targets=targets,
        ref_logp=ref.logp,
        hidden=hidden,
        ref_hidden=ref.hidden,
        tokens=batch["attention_mask"].bool(),
    )
    return inputs, positions


def linked_kinds(terms: list[Term], kinds: list[Rows], share: bool = False) -> list[list[Rows]]:
    """The kinds grouped so that a term's rows and its paired rows fall in one group (in order);
    with `share`, also the kinds that answer the forget prompts (one packed forward)."""
    groups: list[list[Rows]] = [[kind] for kind in kinds]
    shared = [k for k in kinds if k in PROMPT_KINDS]
    if share and len(shared) > 1:
        groups = [shared] + [[k] for k in kinds if k not in PROMPT_KINDS]
    for term in terms:
        if term.pair is None:
            continue
        a = next(g for g in groups if term.rows in g)
        b = next(g for g in groups if term.pair in g)
        if a is not b:
            a.extend(b)
            groups.remove(b)
    return groups


def _packed_forward(model: Any, kinds: dict[Rows, Batch]) -> dict[Rows, torch.Tensor]:
    """One forward over the rows of `kinds` packed by prompt; each kind's final hidden states at
    its scored positions [N, D], in `shift_labels` order."""
    dtype = next(model.parameters()).dtype
    packed = pack(kinds, dtype if dtype.is_floating_point else torch.float32)
    device = next(iter(kinds.values()))["input_ids"].device
    inputs = {name: value.to(device) for name, value in packed.inputs.items()}
    final, _ = hidden_states.forward_split(
        lambda ids, att: model(input_ids=ids, attention_mask=att, position_ids=inputs["position_ids"]),
        model,
        inputs["input_ids"],
        inputs["attention_mask"],
        None,
        lambda h: h,
    )
    return {kind: final[seq.to(device), pos.to(device)] for kind, (seq, pos) in packed.where.items()}


def _group_loss(
    model: Any,
    source: ReferenceSource | None,
    terms: list[Term],
    kinds: dict[Rows, Batch],
    keys: dict[Rows, list[str]] | None,
    layer: int | None,
    chunk: int,
    values: dict[str, float],
    share: bool = False,
) -> torch.Tensor:
    """The weighted terms over one group of linked kinds; each term's mean goes into `values`.
    With `share`, rows that answer one prompt run as one packed sequence (packing.py)."""
    wanted = {kind: needs for kind, needs in wanted_reference(terms).items() if kind in kinds}
    if wanted and source is None:
        raise RuntimeError(f"terms {[t.name for t in terms if t.needs_reference]} need a reference model")
    refs = source.outputs(kinds, wanted, keys, layer) if wanted and source is not None else {}
    gathered = _packed_forward(model, kinds) if share and worth_packing(kinds) else {}
    found = {
        kind: kind_inputs(model, terms, kind, rows, refs.get(kind), layer, chunk, gathered.get(kind))
        for kind, rows in kinds.items()
    }
    total = torch.zeros((), dtype=torch.float32, device=next(iter(kinds.values()))["input_ids"].device)
    for term in (t for t in terms if t.rows in kinds):
        inputs, positions = found[term.rows]
        if term.position_loss is not None:
            inputs = dataclasses.replace(inputs, positions=positions[term.name])
        if term.pair is not None:
            inputs = dataclasses.replace(inputs, pair=found[term.pair][0])
        value = term.loss(inputs).mean()
        total = total + term.weight * value
        values[term.name] = float(value.detach())
    forget = found.get("forget")
    if forget is not None and forget[0].logp is not None:
        # logged for every method (and read by train.stop_forget_nll): the forget answers' NLL
        values["forget_nll"] = float(sequence_nll(forget[0].logp.detach(), forget[0].mask).mean())
    return total


def micro_batch_loss(
    model: Any,
    reference: Reference | ReferenceSource | None,
    terms: list[Term],
    batch: Batch,
    slices: dict[Rows, slice],
    keys: dict[Rows, list[str]] | None = None,
    chunk_positions: int | None = None,
    backward: float | None = None,
    pack_prompts: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms over one micro-batch, and each term's mean (plus `forget_nll`).

    batch: input_ids, attention_mask, labels [B, T], right-padded; slices: the rows of each kind;
    keys: each kind's row keys (needed only by a cached reference); chunk_positions: positions
    per chunk of the output layer (default: hidden.CHUNK_ELEMENTS logits). With `backward`, each
    group of linked kinds (`linked_kinds`) is back-propagated, scaled by it, as soon as its loss
    exists, so only one group's activations are alive at a time; the total returned is detached.
    pack_prompts: run the rows that answer one forget prompt as one packed sequence (packing.py)
    where the architecture allows it.
    """
    layer = steered_layer(model, terms)
    kinds = kind_batches(batch, slices)
    source = as_source(reference)
    chunk = hidden_states.chunk_positions(model, chunk_positions)
    total = torch.zeros((), dtype=torch.float32, device=batch["input_ids"].device)
    values: dict[str, float] = {}
    # prompts are shared only by terms that read the output layer: RMU reads [b, T, D] activations
    share = pack_prompts and shares_prompts(model) and all(t.reads == "logits" for t in terms)
    for group in linked_kinds(terms, list(kinds), share):
        part = {k: kinds[k] for k in group}
        loss = _group_loss(model, source, terms, part, keys, layer, chunk, values, share)
        # a group whose answers were all cut off by max_length scores no token: its loss is a
        # constant with nothing to back-propagate (the plain step gave it a zero gradient)
        if backward is not None and loss.requires_grad:
            (loss * backward).backward()
        if backward is not None:
            loss = loss.detach()
        total = total + loss
    return total, values


def enable_gradient_checkpointing(model: Any) -> None:
    """`train.gradient_checkpointing`: keep only each decoder layer's input for backward and
    recompute the rest, so activation memory per layer falls to one [B, T, D] tensor for about
    one more forward of compute (long sequences, big models)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(model).__name__} does not support train.gradient_checkpointing")
    # non-reentrant: it needs no input that requires grad, which a LoRA model's embeddings are not;
    # transformers 5 renamed the method (the old name warns)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
