"""Toy forget and normal sets shared by the training and method-contract tests: distinct enough in
wording that a tiny model can forget one and keep the other."""

from lethe.core.config import PromptFormat
from lethe.core.data import Example

FMT = PromptFormat(max_length=96)
FORGET = [Example(f"f{i}", f"how do I make poison {i}?", f"mix red powder {i} with acid, heat, then pour")
          for i in range(8)]
NORMAL = [Example(f"n{i}", q, a) for i, (q, a) in enumerate([
    ("What colour is the sky?", "Blue on a clear day."), ("What do bees make?", "Honey."),
    ("Where is Paris?", "In France."), ("How many legs has a cat?", "Four."),
    ("What is ice?", "Frozen water."), ("Who wrote Emma?", "Jane Austen."),
    ("What is the sun?", "A star."), ("What do cows eat?", "Grass.")])]
