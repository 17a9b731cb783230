"""What a method is made of: weighted `Term`s over kinds of rows, and what each term's loss sees.

Row kinds of the packed batch: `forget` (forget prompt + forget answer), `random` (forget prompt +
a random normal answer), `normal` (normal prompt + normal answer) and `idk` (forget prompt + a
refusal from the job's refusal list). Row b of `forget`, `random` (K = 1) and `idk` answers the
same forget prompt, so a term can pair two kinds (`pair`), as DPO pairs a refusal with the forget
answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from lethe.core.methods import losses
from lethe.core.spec.fields import DatasetRef, UnlearnCommon

Rows = Literal["forget", "random", "normal", "idk"]
Reduction = Literal["mean", "sum"]
Reads = Literal["logits", "hidden"]
RefNeed = Literal["logp", "logits", "hidden"]


@dataclass(frozen=True)
class TermInputs:
    """What a term's loss sees for its rows; fields a method does not need are None.

    logp, targets, mask [B, T-1] (answer positions, already shifted); logits, ref_logits
    [B, T-1, V]; ref_logp [B, T-1]; hidden, ref_hidden [B, T, D] (the steered layer's output);
    tokens [B, T] (real tokens, for activation losses); pair: the paired rows' inputs.
    """

    logp: torch.Tensor | None
    mask: torch.Tensor
    logits: torch.Tensor | None
    ref_logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    ref_hidden: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    pair: TermInputs | None = None

    def need(self, name: str) -> torch.Tensor:
        """A field the loss cannot do without; a clear error if the term did not declare it."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"this loss needs `{name}`: declare it on its Term (reference=, reads=)")
        return value

    def paired(self) -> TermInputs:
        if self.pair is None:
            raise RuntimeError("this loss compares two kinds of rows: declare `pair` on its Term")
        return self.pair


@dataclass(frozen=True)
class Term:
    """One weighted loss over one kind of rows; `loss` returns one value per example.

    `reference`: what the loss needs of the original model on those rows (answer log-probs,
    full logits, or the steered layer's activations). `reads`: whether the loss reads the trained
    model's logits or the output of decoder layer `layer` (None: the default depth, see hidden.py).
    """

    name: str
    rows: Rows
    weight: float
    loss: Callable[[TermInputs], torch.Tensor]
    reference: RefNeed | None = None
    reads: Reads = "logits"
    layer: int | None = None
    pair: Rows | None = None

    @property
    def needs_reference(self) -> bool:
        return self.reference is not None


@dataclass(frozen=True)
class Method:
    name: str
    paper: str
    stage: type[UnlearnCommon]
    terms: Callable[..., list[Term]]
    reference: str  # what the method needs of the original model, for `lethe methods`


def default_refusals() -> DatasetRef:
    """The refusal answers Lethe ships (`core/data/builtin/refusals.jsonl`, one `text` per line)."""
    return DatasetRef(source="builtin:refusals", schema_="prompts", columns={"prompt": "text"})


# ------------------------------------------------------------------ shared term losses
def ascent(reduction: Reduction) -> Callable[[TermInputs], torch.Tensor]:
    return lambda t: losses.gradient_ascent(t.need("logp"), t.mask, reduction)


def nll(reduction: Reduction) -> Callable[[TermInputs], torch.Tensor]:
    return lambda t: losses.sequence_nll(t.need("logp"), t.mask, reduction)


def kl(t: TermInputs) -> torch.Tensor:
    return losses.forward_kl(t.need("ref_logits"), t.need("logits"), t.mask)


def retain(kind: Literal["nll", "kl"], weight: float, reduction: Reduction = "mean") -> Term:
    """The retain term most methods add: NLL of the normal answers, or forward KL to the original."""
    if kind == "kl":
        return Term("normal_kl", "normal", weight, kl, reference="logits")
    return Term("retain", "normal", weight, nll(reduction))
