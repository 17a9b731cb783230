"""Plain-text summaries built from a run's metrics.json alone."""

from __future__ import annotations

import re
from typing import Any

# lower is better for these; for the rest higher is better (shown as an arrow in the table)
LOWER_IS_BETTER = {"harmful_rate", "over_refusal", "normal_ppl", "bleu", "rougeL"}
# privacy (eval.privacy): what is known about the forgotten people (`privacy_leak/NAME` is one of them)
LOWER_IS_BETTER |= {"privacy_leak_forget", "privacy_leak", "privacy_qa_forget", "privacy_qa"}


# figures that are best at a value, not at an end: an attacker's AUC at chance (0.5: cannot tell
# forgotten people from strangers; below it the forgotten look *un*familiar, itself a tell) and
# PrivLeak at 0 (MUSE: positive is over-unlearning)
BEST_AT = {"privacy_auc": 0.5, "privacy_privleak": 0.0}


def _base(name: str) -> str:
    return re.split(r"[/@]", name)[0]


def best_at(name: str) -> float | None:
    """The value a figure is best at, or None when lower or higher is simply better."""
    base = _base(name)
    return next((v for prefix, v in BEST_AT.items() if base.startswith(prefix)), None)


def lower_is_better(name: str) -> bool:
    """By the metric's base name: `harmful_rate/NAME@FORMAT` is a harmful rate."""
    return _base(name) in LOWER_IS_BETTER


def direction(name: str) -> str:
    """How to read a figure: "↓" lower is better, "↑" higher, "→0.5" nearest that value."""
    target = best_at(name)
    if target is not None:
        return f"→{target:g}"
    return "↓" if lower_is_better(name) else "↑"


def direction_words(name: str) -> str:
    target = best_at(name)
    if target is not None:
        return f"best at {target:g}"
    return f"{'lower' if lower_is_better(name) else 'higher'} is better"


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
        arrow = direction(name)
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
