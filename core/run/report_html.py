"""An HTML report of a run, built from its run folder alone, readable offline as one file.

`write_report(run_dir)` reads `spec.yaml`, `env.json`, `model.json`, `train_log.jsonl` and
`metrics.json` and writes `report.html`: the loss of each term over the steps of each stage, the
metrics before and after side by side, the judge's accuracy, and sample generations before and
after for the forget (harmful) and benign prompts. Figures are PNGs (matplotlib's Agg canvas,
no pyplot state, so worker threads can draw at once) embedded as base64, so the file needs
nothing else. Every piece of text from the run is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lethe.core.run.report import before_after_table, direction, direction_words
from lethe.core.run.report_privacy import erasure_section, privacy_section

REPORT = "report.html"
NOT_TERMS = {"stage", "step", "lr", "grad_norm"}
SAMPLES = 8
# one offline file: no script, no fetches; figures are inline data: images
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;
vertical-align:top;text-align:left}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:
tabular-nums}pre{background:#f7f7f7;padding:.6em;overflow:auto}img{max-width:100%}.muted{color:#777}
td.gen{font-family:monospace;white-space:pre-wrap;max-width:28em}.warn{color:#a00}"""


# ------------------------------------------------------------------ reading the run folder
def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _train_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, read from the folder (missing files become empty parts)."""
    spec_path = run_dir / "spec.yaml"
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.json: is it a finished run folder?")
    return {
        "spec": yaml.safe_load(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else {},
        "env": _json(run_dir / "env.json") or {},
        "model": _json(run_dir / "model.json") or {},
        "metrics": _json(run_dir / "metrics.json") or {},
        "train": _train_rows(run_dir / "train_log.jsonl"),
    }


# ------------------------------------------------------------------ figures
def _png(draw: Callable[[Any], None], size: tuple[float, float]) -> str:
    """Draw on a fresh figure and return it as a base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode()


def _grid(n: int, columns: int = 3) -> tuple[int, int]:
    cols = min(columns, max(n, 1))
    return math.ceil(n / cols), cols


def loss_figure(rows: list[dict[str, Any]], stage: str) -> str | None:
    """One panel per logged term of `stage` (forget, retain terms, total loss) over its steps."""
    rows = [r for r in rows if r.get("stage") == stage]
    terms = [
        k
        for k in dict.fromkeys(k for r in rows for k in r)
        if k not in NOT_TERMS and any(isinstance(r.get(k), (int, float)) for r in rows)
    ]
    if not terms:
        return None
    n_rows, n_cols = _grid(len(terms))

    def draw(figure: Any) -> None:
        axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, term in zip(axes, terms, strict=False):
            points = [(r["step"], r[term]) for r in rows if isinstance(r.get(term), (int, float))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 40 else "")
            ax.set_title(term)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in axes[len(terms) :]:
            ax.set_visible(False)
        figure.suptitle(f"{stage}: each term over the steps")

    return _png(draw, (4 * n_cols, 2.8 * n_rows))


def numeric_metrics(metrics: dict[str, Any]) -> list[str]:
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    names = dict.fromkeys([*before, *after])
    return [
        n
        for n in names
        if any(isinstance(m.get(n), (int, float)) and not isinstance(m.get(n), bool) for m in (before, after))
    ]


def metrics_figure(metrics: dict[str, Any]) -> str | None:
    """One panel per metric: its value before and after unlearning, side by side."""
    names = numeric_metrics(metrics)
    if not names:
        return None
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    n_rows, n_cols = _grid(len(names), 4)

    def draw(figure: Any) -> None:
        axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, name in zip(axes, names, strict=False):
            values = [before.get(name), after.get(name)]
            heights = [v if isinstance(v, (int, float)) else 0.0 for v in values]
            bars = ax.bar(["before", "after"], heights, color=["#8c8c8c", "#2b7bb9"])
            for bar, value in zip(bars, values, strict=False):
                ax.annotate(
                    "-" if value is None else f"{value:.3g}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.set_title(f"{name} ({direction_words(name)})", fontsize=9)
            if not any(heights):
                ax.set_ylim(0, 1)  # all zero: a flat axis around 0 reads as noise
        for ax in axes[len(names) :]:
            ax.set_visible(False)

    return _png(draw, (3.2 * n_cols, 2.6 * n_rows))


def judge_figure(judge: dict[str, Any] | None) -> str | None:
    """The judge's accuracy on its labelled check set, overall and per kind of text."""
    if not judge or judge.get("accuracy") is None:
        return None
    kinds = judge.get("per_kind") or {}
    labels = ["overall", *kinds]
    values = [judge["accuracy"], *[k.get("accuracy") or 0.0 for k in kinds.values()]]

    def draw(figure: Any) -> None:
        ax = figure.subplots()
        ax.bar(labels, values, color=["#2b7bb9", *["#8c8c8c"] * len(kinds)])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title(f"judge '{judge.get('kind')}' on {judge.get('n')} labelled check texts")
        ax.tick_params(axis="x", labelrotation=20)

    return _png(draw, (7, 3))


# ------------------------------------------------------------------ HTML parts
def esc(value: Any) -> str:
    """Escaped text with control characters shown as U+FFFD (generations can hold anything)."""
    text = "" if value is None else str(value)
    text = "".join(c if c in "\n\t" or unicodedata.category(c)[0] != "C" else "\ufffd" for c in text)
    return html.escape(text)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _img(png: str | None, alt: str) -> str:
    return (
        f'<img alt="{esc(alt)}" src="data:image/png;base64,{png}">'
        if png
        else f'<p class="muted">no data for: {esc(alt)}</p>'
    )


def metrics_table(metrics: dict[str, Any]) -> str:
    before, after = metrics.get("before") or {}, metrics.get("after") or {}
    rows = []
    for name in dict.fromkeys([*before, *after]):
        b, a = before.get(name), after.get(name)
        change = ""
        if isinstance(b, (int, float)) and isinstance(a, (int, float)) and b:
            change = f"{(a - b) / abs(b) * 100:+.1f}%"
        arrow = direction(name)
        rows.append(
            f"<tr><td>{esc(name)} {arrow}</td><td class=num>{_fmt(b)}</td>"
            f"<td class=num>{_fmt(a)}</td><td class=num>{change}</td></tr>"
        )
    return (
        "<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def samples_table(metrics: dict[str, Any], key: str, limit: int = SAMPLES) -> str:
    """Generations for one prompt set, before and after, matched by example id."""
    per = metrics.get("per_example") or {}
    before = {r.get("id"): r for r in (per.get("before") or {}).get(key) or []}
    after = {r.get("id"): r for r in (per.get("after") or {}).get(key) or []}
    ids = [i for i in dict.fromkeys([*before, *after])][:limit]
    if not ids:
        return '<p class="muted">no generations recorded for this set</p>'

    def flags(row: dict[str, Any] | None) -> str:
        row = row or {}
        return ", ".join(k for k in ("harmful", "refusal") if row.get(k)) or "-"

    rows = [
        f"<tr><td>{esc((before.get(i) or after.get(i) or {}).get('prompt'))}</td>"
        f"<td class=gen>{esc((before.get(i) or {}).get('response'))}</td><td>{flags(before.get(i))}</td>"
        f"<td class=gen>{esc((after.get(i) or {}).get('response'))}</td><td>{flags(after.get(i))}</td></tr>"
        for i in ids
    ]
    return (
        "<table><tr><th>prompt</th><th>before</th><th>flags</th><th>after</th><th>flags</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def judge_warning_line(metrics: dict[str, Any]) -> str:
    """The job's `judge_warning` (judge under 0.85 on its check set) as a paragraph, or nothing."""
    warning = metrics.get("judge_warning") or (metrics.get("judge") or {}).get("judge_warning")
    return f'<p class="warn"><b>Judge warning:</b> {esc(warning)}</p>' if warning else ""


def judge_table(judge: dict[str, Any] | None) -> str:
    if not judge:
        return '<p class="muted">no judge: the spec has no harmful prompts to judge</p>'
    rows = "".join(
        f"<tr><td>{esc(kind)}</td><td class=num>{v.get('n')}</td>"
        f"<td class=num>{_fmt(v.get('accuracy'))}</td></tr>"
        for kind, v in (judge.get("per_kind") or {}).items()
    )
    return (
        f"<p>kind <b>{esc(judge.get('kind'))}</b>: accuracy {_fmt(judge.get('accuracy'))} on "
        f"{esc(judge.get('n'))} labelled texts of {esc(judge.get('check_set'))}; held-out accuracy "
        f"{_fmt(judge.get('heldout_accuracy'))}. The harmful rate is only as good as this judge.</p>"
        f"<table><tr><th>kind of text</th><th>n</th><th>accuracy</th></tr>{rows}</table>"
    )


def selection_text(selection: dict[str, Any] | None) -> str:
    if not selection:
        return ""
    return (
        f"<p><b>Checkpoint kept:</b> step {esc(selection.get('chosen_step'))}: "
        f"{esc(selection.get('reason'))}</p>"
    )


def _probe_row(label: str, cells: list[Any]) -> str:
    return f"<tr><td>{esc(label)}</td>" + "".join(f"<td class=num>{_fmt(c)}</td>" for c in cells) + "</tr>"


def probes_table(probes: dict[str, Any] | None) -> str:
    """Each probe's objective on the original, the unlearned and the probed model, and the share
    of the unlearning's improvement retained; quantisation also shows the original at those bits."""
    if not probes:
        return '<p class="muted">no robustness probes were run (the spec has no `probes:` section)</p>'
    key, summary = probes.get("objective"), probes.get("summary") or {}
    relearn, quantize, rephrase = (probes.get(k) or {} for k in ("relearn", "quantize", "rephrase"))
    rows = []
    if relearn:
        rows.append(
            _probe_row(
                f"relearn: {relearn.get('steps')} steps on {relearn.get('relearned_examples')} "
                "forget examples",
                [(relearn.get(k) or {}).get(key) for k in ("original", "unlearned", "probed")]
                + [None, (summary.get("relearn") or {}).get("retained")],
            )
        )
    for bits in (8, 4):
        if f"unlearned_{bits}bit" in quantize:
            rows.append(
                _probe_row(
                    f"{bits}-bit weights",
                    [
                        (quantize.get(k) or {}).get(key)
                        for k in ("original", "unlearned", f"unlearned_{bits}bit", f"original_{bits}bit")
                    ]
                    + [(summary.get(f"quantize_{bits}bit") or {}).get("retained")],
                )
            )
    for name in rephrase.get("probed") or {}:
        rows.append(
            _probe_row(
                f"rephrased prompts: {name}",
                [None, None, rephrase["probed"][name], (rephrase.get("original") or {}).get(name), None],
            )
        )
    return (
        f"<p>Objective: <b>{esc(key)}</b> on the probes' own sets ({esc(quantize.get('method') or '')}).</p>"
        "<table><tr><th>probe</th><th>original</th><th>unlearned</th><th>unlearned after probe</th>"
        "<th>original after probe</th><th>retained</th></tr>" + "".join(rows) + "</table>"
    )


def _summary(run: dict[str, Any]) -> str:
    spec, env, model, metrics = run["spec"], run["env"], run["model"], run["metrics"]
    unlearn, training = spec.get("unlearn") or {}, metrics.get("training") or {}
    items = [
        ("job", spec.get("name")),
        ("model", (spec.get("model") or {}).get("name")),
        ("base weights SHA-256", model.get("weights_sha256")),
        ("method", unlearn.get("method")),
        ("steps", training.get("steps")),
        ("stopped", training.get("stopped_reason")),
        ("seed", env.get("seed")),
        ("device", env.get("device")),
        ("started", env.get("started_at")),
        ("versions", ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)),
    ]
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items) + "</table>"


def render(run: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    metrics, name = run["metrics"], esc((run["spec"] or {}).get("name") or "run")
    stages = list(dict.fromkeys(r.get("stage") for r in run["train"] if r.get("stage")))
    losses = (
        "".join(
            f"<h3>{esc(s)}</h3>{_img(loss_figure(run['train'], s), f'loss terms of {s}')}" for s in stages
        )
        or '<p class="muted">no training steps were logged</p>'
    )
    comparison = metrics.get("comparison") or {}
    extra = "".join(
        f"<p>{esc(k)}: {_fmt(comparison[k])}</p>"
        for k in ("harmful_rate_reduction", "effectiveness_E")
        if comparison.get(k) is not None
    )
    warning = judge_warning_line(metrics)  # above the metrics too: it qualifies the harmful rate
    table, judged = warning + metrics_table(metrics), warning + judge_table(metrics.get("judge"))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>Lethe report: {name}</title><style>{CSS}</style></head><body>
<h1>Lethe unlearning report: {name}</h1>{_summary(run)}
<h2>Metrics before and after</h2>{table}{extra}{_img(metrics_figure(metrics), "metrics")}
{erasure_section(run["spec"] or {})}{privacy_section(metrics)}
<h2>Training: loss of each term over steps</h2>{selection_text(metrics.get("selection"))}{losses}
<h2>Robustness probes</h2>{probes_table(metrics.get("probes"))}
<h2>Judge</h2>{judged}{_img(judge_figure(metrics.get("judge")), "judge accuracy")}
<h2>Sample generations: forget (harmful) prompts</h2>{samples_table(metrics, "harmful_prompts")}
<h2>Sample generations: benign prompts</h2>{samples_table(metrics, "benign_prompts")}
<h2>As text</h2><pre>{esc(before_after_table(metrics))}</pre>
<p class="muted">Built from the run folder alone by lethe.core.run.report_html.</p></body></html>
"""


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of `run_dir` (to `run_dir/report.html` unless `out` is given)."""
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / REPORT
    text = render(load_run(run_dir))
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
