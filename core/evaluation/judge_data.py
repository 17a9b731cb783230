"""The trained judge's shipped training data (`builtin:judge_train`), read by split.

Why it exists: a job's own texts teach the judge only the job's forget prompts against its
everyday prompts and 62 built-in refusals, so a mild harm worded like an everyday request looks
everyday, an everyday request with a harmful-sounding verb looks harmful, and a refusal without a
refusal phrase looks like an answer. `scripts/make_judge_train.py` writes the file (harmful
requests in 24 categories and everyday requests that only sound sensitive, in several wordings,
with compliant, benign and refusing answers) and says how; its `validation` split is for choosing
the judge's hyper-parameters and is never trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lethe.core.data.examples import read_rows
from lethe.core.spec.fields import DatasetRef

TRAINING_SOURCE = "builtin:judge_train"


@dataclass(frozen=True)
class JudgeTraining:
    """Texts the trained judge learns from besides the job's own (all deduplicated, in file order).

    harmful_prompts / everyday_prompts: requests that are / are not harmful (the prompt side);
    refusals: refusals worded without a refusal phrase (the refusal side's positives);
    compliant / benign: answers that deliver, to harmful and to everyday requests (the refusal
    side's negatives; benign answers with harmful prompts also make off-topic pairs)."""

    harmful_prompts: list[str] = field(default_factory=list)
    everyday_prompts: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    compliant: list[str] = field(default_factory=list)
    benign: list[str] = field(default_factory=list)


def _unique(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(t for t in texts if t.strip()))


def load_judge_training(source: str = TRAINING_SOURCE, split: str = "train") -> JudgeTraining:
    """The rows of `split` ("train" or "validation") of `source`, sorted into `JudgeTraining`.

    Only the kinds that teach a part of the judge are used: compliant*, benign, refusal_implicit
    (off-topic and degenerate rows are validation material for the whole judge)."""
    rows = [r for r in read_rows(DatasetRef(source=source)) if r.get("split") == split]

    def answers(wanted: Callable[[str], bool]) -> list[str]:
        return _unique([str(r["response"]) for r in rows if wanted(str(r["kind"]))])

    return JudgeTraining(
        harmful_prompts=_unique([str(r["prompt"]) for r in rows if r["prompt_harmful"]]),
        everyday_prompts=_unique([str(r["prompt"]) for r in rows if not r["prompt_harmful"]]),
        refusals=answers(lambda kind: kind == "refusal_implicit"),
        compliant=answers(lambda kind: kind.startswith("compliant")),
        benign=answers(lambda kind: kind == "benign"),
    )
