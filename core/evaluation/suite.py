"""One evaluation pass of a model (run before and after unlearning): collect, then score.

Each `_collect_*` runs the model on one set (batched) and returns per-example rows; the metrics
are then computed from those rows by the pure functions of `scores`. A metric is only reported
when its inputs are present (a set is empty, no judge, no reference responses: no metric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lethe.core.data.examples import Example, MCQuestion
from lethe.core.evaluation import scores
from lethe.core.evaluation.generation import generate
from lethe.core.evaluation.judges import Judge
from lethe.core.evaluation.likelihood import answer_nll, choice_logliks
from lethe.core.evaluation.privacy_eval import PrivacyRun, PrivacySets, evaluate_privacy
from lethe.core.evaluation.privacy_eval import planned as planned_privacy
from lethe.core.spec.evaluation import EvalSpec
from lethe.core.spec.fields import PromptFormat

Row = dict[str, Any]


@dataclass
class EvalSets:
    """Already-loaded evaluation data; any list may be empty."""

    harmful_prompts: list[Example] = field(default_factory=list)
    benign_prompts: list[Example] = field(default_factory=list)
    normal: list[Example] = field(default_factory=list)
    mc: list[MCQuestion] = field(default_factory=list)
    copyright_forget: list[Example] = field(default_factory=list)
    copyright_retain: list[Example] = field(default_factory=list)
    harmful_sets: dict[str, list[Example]] = field(default_factory=dict)  # further sets, by name
    privacy: PrivacySets | None = None  # people's records (`eval.privacy`)


@dataclass
class EvalResult:
    """Aggregate metrics, per-example rows keyed by set name, and responses keyed by example id."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_example: dict[str, list[Row]] = field(default_factory=dict)
    responses: dict[str, str] = field(default_factory=dict)


def _no_progress(_: int) -> None:
    pass


@dataclass(frozen=True)
class _Run:
    model: Any
    tokenizer: Any
    spec: EvalSpec
    fmt: PromptFormat
    tick: Callable[[int], None] = _no_progress  # examples done (progress)

    def generate(self, examples: Sequence[Example]) -> list[str]:
        return generate(
            self.model,
            self.tokenizer,
            [ex.prompt for ex in examples],
            self.fmt.text,
            self.spec.generation,
            on_batch=self.tick,
        )

    def nll_rows(self, examples: Sequence[Example]) -> list[Row]:
        nlls = answer_nll(self.model, self.tokenizer, examples, self.fmt, self.spec.batch_size)
        self.tick(len(examples))
        return [
            {"id": ex.id, "prompt": ex.prompt, "nll": s, "tokens": n}
            for ex, (s, n) in zip(examples, nlls, strict=False)
        ]


def _nll_metric(rows: list[Row], name: str, as_perplexity: bool) -> dict[str, float]:
    sums, counts = [r["nll"] for r in rows], [r["tokens"] for r in rows]
    if not rows or sum(counts) == 0:
        return {}
    value = scores.perplexity(sums, counts) if as_perplexity else scores.mean_nll(sums, counts)
    return {name: value}


def _collect_harmful(run: _Run, examples: list[Example], judge: Judge | None) -> list[Row]:
    responses = run.generate(examples)
    verdicts: list[bool | None] = [None] * len(examples)
    if judge is not None:
        verdicts = list(judge.judge([ex.prompt for ex in examples], responses))
    return [
        {"id": ex.id, "prompt": ex.prompt, "response": r, "harmful": v, "refusal": scores.is_refusal(r)}
        for ex, r, v in zip(examples, responses, verdicts, strict=False)
    ]


def _score_harmful(rows: list[Row]) -> dict[str, float]:
    metrics = {"diversity": scores.distinct_n([r["response"] for r in rows], 2)}
    if rows[0]["harmful"] is not None:
        metrics["harmful_rate"] = scores.rate([r["harmful"] for r in rows])
    return metrics


def _collect_benign(run: _Run, examples: list[Example], references: dict[str, str] | None) -> list[Row]:
    rows = []
    for ex, response in zip(examples, run.generate(examples), strict=False):
        row: Row = {
            "id": ex.id,
            "prompt": ex.prompt,
            "response": response,
            "refusal": scores.is_refusal(response),
        }
        if references is not None and ex.id in references:
            row["reference"] = references[ex.id]
            row["similarity"] = scores.rouge_l_each([response], [references[ex.id]])[0]
        rows.append(row)
    return rows


def _score_benign(rows: list[Row]) -> dict[str, float]:
    metrics = {"over_refusal": scores.rate([r["refusal"] for r in rows])}
    compared = [r for r in rows if "reference" in r]
    if compared:
        metrics["benign_similarity"] = scores.rouge_l(
            [r["response"] for r in compared], [r["reference"] for r in compared]
        )
    return metrics


def _collect_copyright(run: _Run, examples: list[Example]) -> list[Row]:
    rows = []
    for ex, response in zip(examples, run.generate(examples), strict=False):
        rows.append(
            {
                "id": ex.id,
                "prompt": ex.prompt,
                "response": response,
                "reference": ex.response,
                "bleu": scores.bleu([response], [ex.response]),
                "rougeL": scores.rouge_l_each([response], [ex.response])[0],
            }
        )
    return rows


def _score_copyright(rows: list[Row], suffix: str) -> dict[str, float]:
    hyps, refs = [r["response"] for r in rows], [r["reference"] for r in rows]
    return {f"bleu{suffix}": scores.bleu(hyps, refs), f"rougeL{suffix}": scores.rouge_l(hyps, refs)}


def _collect_mc(run: _Run, questions: list[MCQuestion]) -> list[Row]:
    rows = []
    for q in questions:
        row: Row = {"id": q.id, "question": q.question}
        if q.mc1_choices:
            lls = choice_logliks(
                run.model, run.tokenizer, q.question, q.mc1_choices, run.fmt, run.spec.batch_size
            )
            row.update(mc1=scores.mc1(lls, q.mc1_correct), mc1_logliks=lls)
        if q.mc2_choices:
            lls = choice_logliks(
                run.model, run.tokenizer, q.question, q.mc2_choices, run.fmt, run.spec.batch_size
            )
            row.update(mc2=scores.mc2(lls, q.mc2_labels), mc2_logliks=lls)
        rows.append(row)
        run.tick(1)
    return rows


def _score_mc(rows: list[Row]) -> dict[str, float]:
    metrics = {}
    for name in ("mc1", "mc2"):
        values = [r[name] for r in rows if name in r]
        if values:
            metrics[name] = sum(values) / len(values)
    return metrics


def _record(result: EvalResult, name: str, rows: list[Row], metrics: dict[str, float]) -> None:
    result.per_example[name] = rows
    result.metrics.update(metrics)
    result.responses.update({str(r["id"]): r["response"] for r in rows if "response" in r})


def evaluate(
    model: Any,
    tokenizer: Any,
    spec: EvalSpec,
    fmt: PromptFormat,
    judge: Judge | None,
    *,
    forget: list[Example] | None,
    reference_responses: dict[str, str] | None,
    sets: EvalSets,
    on_examples: Callable[[int], None] | None = None,
) -> EvalResult:
    """Measure `model` on every non-empty set; see the module docstring for what is reported.

    Sets are capped at `spec.max_examples` (copyright sets at `spec.copyright.max_examples` when
    set), taking the first examples so before and after see the same ones. `responses` maps example
    ids to generations; benign responses are recorded last, so passing a BEFORE run's `responses`
    as the AFTER run's `reference_responses` compares benign answers with benign answers even if
    ids repeat across sets.
    """
    cap = spec.max_examples
    cap_copyright = spec.copyright.max_examples if spec.copyright else cap
    run = _Run(model, tokenizer, spec, fmt, on_examples or _no_progress)
    result = EvalResult()
    if forget:
        rows = run.nll_rows(forget[:cap])
        _record(result, "forget", rows, _nll_metric(rows, "forget_nll", as_perplexity=False))
    if sets.normal:
        rows = run.nll_rows(sets.normal[:cap])
        _record(result, "normal", rows, _nll_metric(rows, "normal_ppl", as_perplexity=True))
    if sets.mc:
        rows = _collect_mc(run, sets.mc[:cap])
        _record(result, "mc", rows, _score_mc(rows))
    if sets.harmful_prompts:
        rows = _collect_harmful(run, sets.harmful_prompts[:cap], judge)
        _record(result, "harmful_prompts", rows, _score_harmful(rows))
    if sets.copyright_forget:
        rows = _collect_copyright(run, sets.copyright_forget[:cap_copyright])
        _record(result, "copyright_forget", rows, _score_copyright(rows, ""))
    if sets.copyright_retain:
        rows = _collect_copyright(run, sets.copyright_retain[:cap_copyright])
        _record(result, "copyright_retain", rows, _score_copyright(rows, "_retain"))
    if sets.benign_prompts:
        rows = _collect_benign(run, sets.benign_prompts[:cap], reference_responses)
        _record(result, "benign_prompts", rows, _score_benign(rows))
    if sets.privacy is not None and spec.privacy is not None:
        private = PrivacyRun(model, tokenizer, spec.privacy, fmt, spec.batch_size, run.tick)
        private_metrics, private_rows = evaluate_privacy(private, sets.privacy)
        result.metrics.update(private_metrics)
        result.per_example.update(private_rows)
    _evaluate_variants(result, run, sets, judge)
    return result


def planned_examples(spec: EvalSpec, sets: EvalSets, forget: list[Example] | None) -> int:
    """How many examples `evaluate` will go through (its progress total)."""
    cap = spec.max_examples
    cap_copyright = spec.copyright.max_examples if spec.copyright else cap
    harmful: list[list[Example]] = [sets.harmful_prompts, *sets.harmful_sets.values()]
    sized: list[Sequence[object]] = [forget or [], sets.normal, sets.mc, *harmful, sets.benign_prompts]
    once = sum(min(len(s), cap) for s in sized)
    copyright = sum(min(len(s), cap_copyright) for s in (sets.copyright_forget, sets.copyright_retain))
    per_format = sum(min(len(s), cap) for s in [*harmful, sets.benign_prompts])
    private = planned_privacy(spec.privacy, sets.privacy) if sets.privacy and spec.privacy else 0
    return once + copyright + per_format * len(spec.formats) + private


def _renamed(metrics: dict[str, float], suffix: str) -> dict[str, float]:
    return {f"{name}{suffix}": value for name, value in metrics.items()}


def _evaluate_variants(result: EvalResult, run: _Run, sets: EvalSets, judge: Judge | None) -> None:
    """The further harmful sets (`harmful_rate/NAME`), then every harmful set and the benign prompts
    asked again in each further format (`harmful_rate@FORMAT`, `harmful_rate/NAME@FORMAT`,
    `over_refusal@FORMAT`). Their rows go to `per_example` only: `responses` keeps the main ones."""
    cap = run.spec.max_examples
    for name, examples in sets.harmful_sets.items():
        if examples:
            rows = _collect_harmful(run, examples[:cap], judge)
            result.per_example[f"harmful_prompts/{name}"] = rows
            result.metrics.update(_renamed(_score_harmful(rows), f"/{name}"))
    harmful = {"": sets.harmful_prompts, **{f"/{name}": e for name, e in sets.harmful_sets.items()}}
    for fmt_name, template in run.spec.formats.items():
        variant = replace(run, fmt=run.fmt.model_copy(update={"template": template}))
        suffix = f"@{fmt_name}"
        for set_suffix, examples in harmful.items():
            if examples:
                rows = _collect_harmful(variant, examples[:cap], judge)
                result.per_example[f"harmful_prompts{set_suffix}{suffix}"] = rows
                result.metrics.update(_renamed(_score_harmful(rows), set_suffix + suffix))
        if sets.benign_prompts:
            rows = _collect_benign(variant, sets.benign_prompts[:cap], None)
            result.per_example[f"benign_prompts{suffix}"] = rows
            result.metrics[f"over_refusal{suffix}"] = _score_benign(rows)["over_refusal"]
