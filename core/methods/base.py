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
# a loss over the whole vocabulary at each scored position: (logits [N, V], the reference's logits
# [N, V] or None, targets [N]) -> [N]; the step evaluates it in chunks of positions
PositionLoss = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TermInputs:
    """What a term's loss sees for its rows; fields a method does not need are None.

    logp, targets, mask [B, T-1] (answer positions, already shifted); ref_logp [B, T-1];
    positions [B, T-1]: the term's `position_loss` at each scored position (0 elsewhere); hidden,
    ref_hidden [B, T, D] (the steered layer's output); tokens [B, T] (real tokens, for activation
    losses); pair: the paired rows' inputs. Full-vocabulary logits never reach a term: they exist
    only inside the step's chunks, for the scored positions.
    """

    logp: torch.Tensor | None
    mask: torch.Tensor
    targets: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    positions: torch.Tensor | None = None
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
    logits at the answer positions, or the steered layer's activations). `reads`: whether the loss
    reads the trained model's output layer or the output of decoder layer `layer` (None: the
    default depth, see hidden.py). `position_loss`: a loss over the vocabulary at each answer
    position (KL, distillation), which the step computes in chunks into `TermInputs.positions`.
    """

    name: str
    rows: Rows
    weight: float
    loss: Callable[[TermInputs], torch.Tensor]
    reference: RefNeed | None = None
    reads: Reads = "logits"
    layer: int | None = None
    pair: Rows | None = None
    position_loss: PositionLoss | None = None

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


def position_mean(t: TermInputs) -> torch.Tensor:
    """The loss of a term with a `position_loss`: its mean over each example's answer positions."""
    return losses.token_mean(t.need("positions"), t.mask)


def kl_term(name: str, rows: Rows, weight: float) -> Term:
    """Forward KL to the original model over the answer positions of `rows` (Yao et al. eq. 4)."""
    return Term(
        name,
        rows,
        weight,
        position_mean,
        reference="logits",
        position_loss=lambda logits, ref, _targets: losses.position_kl(_need(ref), logits),
    )


def _need(ref: torch.Tensor | None) -> torch.Tensor:
    if ref is None:
        raise RuntimeError("this position loss needs the reference's logits: declare reference='logits'")
    return ref


def retain(kind: Literal["nll", "kl"], weight: float, reduction: Reduction = "mean") -> Term:
    """The retain term most methods add: NLL of the normal answers, or forward KL to the original."""
    if kind == "kl":
        return kl_term("normal_kl", "normal", weight)
    return Term("retain", "normal", weight, nll(reduction))
