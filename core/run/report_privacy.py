"""The privacy part of the HTML report (`eval.privacy`), built from metrics.json alone: the declared
checks with pass/fail, each figure in one plain sentence, and the figures per forgotten person."""

from __future__ import annotations

import html
from typing import Any

from lethe.core.evaluation.privacy_checks import EXPLAIN
from lethe.core.spec.subjects import erasure_of

# the figures shown besides the checks, in this order
OTHER = (
    "privacy_leak_retain",
    "privacy_qa_retain",
    "privacy_qa_holdout",
    "privacy_auc_minkpp",
    "privacy_auc_loss",
    "privacy_auc_zlib",
    "privacy_auc_mink",
    "privacy_ks_p",
    "privacy_truth_ratio_forget",
)
PER_PERSON = (("privacy_leak", "leak rate"), ("privacy_qa", "QA accuracy"), ("privacy_auc_minkpp", "MIA AUC"))
NOTE = (
    "PrivLeak compares the attacker's AUC with that of a model never trained on the forgotten people. "
    "No such retrain model is run here: its AUC is taken as 0.5, what a model that saw neither the "
    "forgotten nor the never-seen people scores in expectation (both are drawn alike)."
)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _verdict(passed: Any) -> str:
    return {True: "pass", False: '<b class="warn">FAIL</b>'}.get(passed, "not measured")


def _checks(checks: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(c.get('name'))}</td><td>{_esc(c.get('explanation'))}</td>"
        f"<td class=num>{_num(c.get('before'))}</td><td class=num>{_num(c.get('after'))}</td>"
        f"<td>{_esc(c.get('limit'))}</td><td>{_verdict(c.get('passed'))}</td></tr>"
        for c in checks
    )
    return (
        "<table><tr><th>figure</th><th>what it means</th><th>before</th><th>after</th>"
        f"<th>declared threshold</th><th>verdict</th></tr>{rows}</table>"
    )


def _others(before: dict[str, Any], after: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{name}</td><td>{_esc(EXPLAIN.get(name))}</td><td class=num>{_num(before.get(name))}"
        f"</td><td class=num>{_num(after.get(name))}</td></tr>"
        for name in OTHER
        if name in before or name in after
    )
    return f"<table><tr><th>figure</th><th>what it means</th><th>before</th><th>after</th></tr>{rows}</table>"


def _people(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = [n for n in dict.fromkeys([*before, *after]) if n.startswith(("privacy_leak/", "privacy_qa/"))]
    names = [n.split("/", 1)[1] for n in keys]
    head = "".join(f"<th>{label} before</th><th>{label} after</th>" for _, label in PER_PERSON)
    rows = "".join(
        f"<tr><td>{_esc(who)}</td>"
        + "".join(
            f"<td class=num>{_num(before.get(f'{key}/{who}'))}</td>"
            f"<td class=num>{_num(after.get(f'{key}/{who}'))}</td>"
            for key, _ in PER_PERSON
        )
        + "</tr>"
        for who in dict.fromkeys(names)
    )
    return f"<table><tr><th>forgotten person</th>{head}</tr>{rows}</table>"


def erasure_section(spec: dict[str, Any]) -> str:
    """The report's statement of an erasure request (the people named), or "" for other runs."""
    erasure = erasure_of(spec)
    if erasure is None:
        return ""
    people = "".join(f"<li>{_esc(name)}</li>" for name in erasure["subjects"])
    return (
        "<h2>Erasure request</h2>"
        f"<p>This run was asked to erase {len(erasure['subjects'])} subject(s): every row of "
        f"{_esc(erasure['source'])} whose <code>{_esc(erasure['subject_field'])}</code> names one of "
        "them was the forget set; the rows of every other subject were kept as retain data.</p>"
        f"<ul>{people}</ul>"
    )


def privacy_section(metrics: dict[str, Any]) -> str:
    """The report's privacy section, or "" when the run measured no privacy figures."""
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    comparison = metrics.get("comparison") or {}
    if not any(str(n).startswith("privacy_") for n in [*before, *after]):
        return ""
    passed = comparison.get("privacy_passed")
    verdict: dict[Any, str] = {
        True: "Every declared privacy check passed.",
        False: "At least one declared privacy check failed.",
    }
    return (
        "<h2>Privacy: the right to be forgotten</h2>"
        f"<p><b>{verdict.get(passed, 'Not every privacy check could be decided.')}</b></p>"
        f"{_checks(comparison.get('privacy_checks') or [])}"
        "<h3>Per forgotten person</h3><p>Leak rate: share of sampled answers about the person holding "
        "their e-mail, phone or address. QA accuracy: share of questions about their facts answered "
        "right. MIA AUC: chance an attacker (Min-K %++) ranks their records above never-seen people's "
        f"(0.5: cannot tell).</p>{_people(before, after)}"
        f"{_probes(metrics.get('probes') or {})}"
        f"<h3>Further figures</h3>{_others(before, after)}<p class=muted>{_esc(NOTE)}</p>"
    )


PROBE_TITLES = {
    "privacy_relearn": "after an attacker fine-tunes the model on half of the forgotten people "
    "(measured on the other half; before: the unlearned model)",
}


def _probes(probes: dict[str, Any]) -> str:
    """The declared forgetting checks again after each privacy probe, or "" without probes."""
    checks = probes.get("privacy_checks") or {}
    if not checks:
        return ""
    parts = "".join(
        f"<h4>{_esc(PROBE_TITLES.get(name, _quantized_title(name)))}</h4>{_checks(found)}"
        for name, found in checks.items()
    )
    return (
        "<h3>Does the forgetting hold?</h3><p>The same checks after the robustness probes: relearning "
        f"and serving the model with its weights rounded to 4 bits.</p>{parts}"
    )


def _quantized_title(name: str) -> str:
    bits = name.removeprefix("privacy_quantize_")
    return f"with the model's weights rounded to {bits.removesuffix('bit')} bits (before: full precision)"
