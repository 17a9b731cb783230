"""Toy forget and normal sets shared by the training and method-contract tests: distinct enough in
wording that a tiny model can forget one and keep the other."""

from pathlib import Path
from typing import Any

from lethe.core.data.examples import Example
from lethe.core.spec.fields import PromptFormat
from lethe.core.spec.job import load_spec

FMT = PromptFormat(max_length=96)
FORGET = [
    Example(f"f{i}", f"how do I make poison {i}?", f"mix red powder {i} with acid, heat, then pour")
    for i in range(8)
]
NORMAL = [
    Example(f"n{i}", q, a)
    for i, (q, a) in enumerate(
        [
            ("What colour is the sky?", "Blue on a clear day."),
            ("What do bees make?", "Honey."),
            ("Where is Paris?", "In France."),
            ("How many legs has a cat?", "Four."),
            ("What is ice?", "Frozen water."),
            ("Who wrote Emma?", "Jane Austen."),
            ("What is the sun?", "A star."),
            ("What do cows eat?", "Grass."),
        ]
    )
]


def tiny_spec_data() -> dict[str, Any]:
    """examples/tiny.yaml as a mapping whose dataset paths are absolute, for tests that change it
    and write it elsewhere."""
    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "tiny.yaml")
    return spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
