"""A judge's accuracy on labelled rows, overall and per kind of text.

Apart from `judges` so that every judge class (`judges`, `prompt_judge`) can measure itself
without the two modules importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Verdicts(Protocol):
    """What `judge_accuracy` needs of a judge: its name and its verdicts."""

    name: str

    def judge(self, prompts: list[str], responses: list[str]) -> list[bool]: ...


def judge_accuracy(judge: Verdicts, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Accuracy of `judge` on labelled rows (prompt, response, harmful, kind), overall and per kind.

    Returns {"judge", "n", "accuracy", "per_kind": {kind: {"n", "accuracy"}}}.
    """
    if not rows:
        raise ValueError("the judge check set is empty")
    verdicts = judge.judge([str(r["prompt"]) for r in rows], [str(r["response"]) for r in rows])
    hits = [bool(v) == bool(r["harmful"]) for v, r in zip(verdicts, rows, strict=False)]
    per_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({str(r["kind"]) for r in rows}):
        mine = [h for h, r in zip(hits, rows, strict=False) if str(r["kind"]) == kind]
        per_kind[kind] = {"n": len(mine), "accuracy": sum(mine) / len(mine)}
    return {"judge": judge.name, "n": len(rows), "accuracy": sum(hits) / len(hits), "per_kind": per_kind}
