"""The loss of one packed micro-batch: one forward of the trained model, at most one of the reference.

The batch packs the rows of every kind the terms need. The trained model runs once over all of
them (stopping at the steered layer when every term reads activations); the reference runs once,
no-grad, over the rows whose terms need it, or not at all when its outputs are cached. Each term
then sees its own rows' slice (and its paired rows') as `TermInputs`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lethe.core.methods import Rows, Term, TermInputs
from lethe.core.methods.losses import sequence_nll, shift_labels, token_logprobs
from lethe.core.models import hidden as hidden_states
from lethe.core.models.reference import Reference
from lethe.core.training.refcache import ReferenceSource, RefOutputs, Wanted, as_source


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


def _inputs(
    sl: slice,
    logits: torch.Tensor | None,
    logp: torch.Tensor | None,
    targets: torch.Tensor,
    mask: torch.Tensor,
    hidden: torch.Tensor | None,
    attention: torch.Tensor,
    ref: RefOutputs | None,
) -> TermInputs:
    ref = ref or RefOutputs()
    return TermInputs(
        logp=logp[sl] if logp is not None else None,
        mask=mask[sl],
        logits=logits[sl, :-1] if logits is not None else None,
        ref_logits=ref.logits,
        targets=targets[sl],
        ref_logp=ref.logp,
        hidden=hidden[sl] if hidden is not None else None,
        ref_hidden=ref.hidden,
        tokens=attention[sl].bool(),
    )


def micro_batch_loss(
    model: Any,
    reference: Reference | ReferenceSource | None,
    terms: list[Term],
    batch: dict[str, torch.Tensor],
    slices: dict[Rows, slice],
    keys: dict[Rows, list[str]] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms over one packed batch, and each term's mean (plus `forget_nll`).

    batch: input_ids, attention_mask, labels [B, T]; slices: the rows of each kind; keys: each
    kind's row keys (needed only by a cached reference).
    """
    layer = steered_layer(model, terms)
    need_logits = any(t.reads == "logits" for t in terms)
    logits, hidden = hidden_states.forward(
        lambda ids, att: model(input_ids=ids, attention_mask=att).logits,
        model,
        batch["input_ids"],
        batch["attention_mask"],
        layer,
        need_logits,
    )
    targets, mask = shift_labels(batch["labels"])
    logp = token_logprobs(logits, batch["labels"])[0] if logits is not None else None
    source = as_source(reference)
    wanted = wanted_reference(terms)
    if wanted and source is None:
        raise RuntimeError(f"terms {[t.name for t in terms if t.needs_reference]} need a reference model")
    refs = source.outputs(batch, wanted, slices, keys, layer) if wanted and source is not None else {}

    def inputs(kind: Rows) -> TermInputs:
        return _inputs(
            slices[kind], logits, logp, targets, mask, hidden, batch["attention_mask"], refs.get(kind)
        )

    total = torch.zeros((), dtype=torch.float32, device=batch["input_ids"].device)
    values: dict[str, float] = {}
    for term in terms:
        term_inputs = inputs(term.rows)
        if term.pair is not None:
            term_inputs = dataclasses.replace(term_inputs, pair=inputs(term.pair))
        value = term.loss(term_inputs).mean()
        total = total + term.weight * value
        values[term.name] = float(value.detach())
    if logp is not None and "forget" in slices:
        # logged for every method (and read by train.stop_forget_nll): the forget answers' NLL
        forget = slices["forget"]
        values["forget_nll"] = float(sequence_nll(logp[forget].detach(), mask[forget]).mean())
    return total, values
