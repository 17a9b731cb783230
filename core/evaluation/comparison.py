"""Before/after comparison of two metric dicts (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lethe.core.evaluation.scores import effectiveness_score, relative_reduction


def compare(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, Any]:
    """Per metric present in both: before, after, delta (after - before) and relative change.

    relative_change = delta / |before| (None when before is 0). When both hold `harmful_rate`,
    also `harmful_rate_reduction` = (before - after) / before and the paper's `effectiveness_E` =
    that × 100 (arXiv 2405.15152); both None when the rate before is 0.
    """
    metrics: dict[str, dict[str, float | None]] = {}
    for name in sorted(set(before) & set(after)):
        b, a = float(before[name]), float(after[name])
        metrics[name] = {
            "before": b,
            "after": a,
            "delta": a - b,
            "relative_change": (a - b) / abs(b) if b != 0 else None,
        }
    result: dict[str, Any] = {"metrics": metrics}
    if "harmful_rate" in metrics:
        b, a = float(before["harmful_rate"]), float(after["harmful_rate"])
        result["harmful_rate_reduction"] = relative_reduction(b, a) if b != 0 else None
        result["effectiveness_E"] = effectiveness_score(b, a) if b != 0 else None
    # every harmful rate (further sets `/NAME`, further formats `@FORMAT`): its own reduction
    result["harmful_reductions"] = {
        name: relative_reduction(m["before"], m["after"]) if m["before"] else None
        for name, m in metrics.items()
        if name.startswith("harmful_rate") and m["before"] is not None and m["after"] is not None
    }
    return result
