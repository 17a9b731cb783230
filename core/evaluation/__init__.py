"""Before/after evaluation of a causal LM: generation, likelihoods, pure scores, judges, suite.

`scores` and `comparison` are pure; `generation`, `likelihood` and `suite` run the model; `judges`
holds the harmfulness judges, found by name in `JUDGES`.
"""

from lethe.core.evaluation.comparison import compare
from lethe.core.evaluation.generation import generate
from lethe.core.evaluation.judges import JUDGES, Judge, build_judge, load_check_set
from lethe.core.evaluation.likelihood import answer_nll, choice_logliks
from lethe.core.evaluation.suite import EvalResult, EvalSets, evaluate

__all__ = [
    "JUDGES",
    "EvalResult",
    "EvalSets",
    "Judge",
    "answer_nll",
    "build_judge",
    "choice_logliks",
    "compare",
    "evaluate",
    "generate",
    "load_check_set",
]
