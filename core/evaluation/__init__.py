"""Before/after evaluation of a causal LM: generation, likelihoods, pure scores, judges, suite.

`scores` and `comparison` are pure; `generation`, `likelihood` and `suite` run the model; `judges`
holds the harmfulness judges, found by name in `JUDGES`.
"""

from .comparison import compare
from .generation import generate
from .judges import JUDGES, Judge, build_judge, load_check_set
from .likelihood import answer_nll, choice_logliks
from .suite import EvalResult, EvalSets, evaluate

__all__ = ["JUDGES", "EvalResult", "EvalSets", "Judge", "answer_nll", "build_judge",
           "choice_logliks", "compare", "evaluate", "generate", "load_check_set"]
