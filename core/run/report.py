"""Plain-text summaries built from a run's metrics.json alone."""

from __future__ import annotations

import re
from typing import Any

# lower is better for these; for the rest higher is better (shown as an arrow in the table)
LOWER_IS_BETTER = {"harmful_rate", "over_refusal", "normal_ppl", "bleu", "rougeL"}
# privacy (eval.privacy): what is known about the forgotten people (`privacy_leak/NAME` is one of them)
LOWER_IS_BETTER |= {"privacy_leak_forget", "privacy_leak", "privacy_qa_forget", "privacy_qa"}


def lower_is_better(name: str) -> bool:
    """By the metric's base name: `harmful_rate/NAME@FORMAT` is a harmful rate."""
    return re.split(r"[/@]", name)[0] in LOWER_IS_BETTER


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def before_after_table(metrics: dict[str, Any]) -> str:
    """A fixed-width table: metric, before, after, change."""
    before, after = metrics.get("before", {}), metrics.get("after", {})
    names = list(dict.fromkeys([*before, *after]))
    lines = [f"{'metric':22s} {'before':>10s} {'after':>10s} {'change':>10s}"]
    for name in names:
        b, a = before.get(name), after.get(name)
        change = ""
        if isinstance(b, (int, float)) and isinstance(a, (int, float)) and b:
            change = f"{(a - b) / abs(b) * 100:+.1f}%"
        arrow = "↓" if lower_is_better(name) else "↑"
        lines.append(f"{name + ' ' + arrow:22s} {_fmt(b):>10s} {_fmt(a):>10s} {change:>10s}")
    judge = metrics.get("judge")
    if judge:
        lines.append(
            f"judge ({judge['kind']}): accuracy {judge['accuracy']:.3f} on {judge['n']} "
            f"labelled check texts; held-out {_fmt(judge.get('heldout_accuracy'))}"
        )
        if judge.get("judge_warning"):
            lines.append(f"WARNING: {judge['judge_warning']}")
    comparison = metrics.get("comparison", {})
    for key in ("harmful_rate_reduction", "effectiveness_E"):
        if comparison.get(key) is not None:
            lines.append(f"{key}: {_fmt(comparison[key])}")
    for check in comparison.get("privacy_checks") or []:  # eval.privacy's declared thresholds
        verdict = {True: "pass", False: "FAIL"}.get(check["passed"], "not measured")
        lines.append(f"privacy check {check['name']}: {_fmt(check['after'])} ({check['limit']}): {verdict}")
    return "\n".join(lines)
