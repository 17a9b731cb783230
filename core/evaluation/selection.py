"""Evaluation during training and the checkpoint a run keeps.

`choose` and `stalled` are pure: given the evaluations so far (the first is the model before
unlearning, step 0), which one is best by the spec's `Criterion`, and has the objective stopped
improving. `Selection` is what the training loop holds: it evaluates every N steps, keeps a
snapshot of the trainable weights of the best evaluation so far (on disk, so a resumed run keeps
it too), and at the end puts those weights back, so the adapter written is that checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lethe.core.data.examples import Example
from lethe.core.evaluation import EvalSets, Judge, evaluate
from lethe.core.models.weights import load_trainable_
from lethe.core.spec.evaluation import EvalSpec
from lethe.core.spec.fields import PromptFormat
from lethe.core.spec.options import LOWER_IS_BETTER, Criterion, Objective, SelectSpec

log = logging.getLogger(__name__)
Metrics = dict[str, float]


@dataclass(frozen=True)
class Evaluation:
    step: int
    metrics: Metrics


def score(metrics: Metrics, objective: Objective) -> float:
    """The objective with lower = better (forget NLL is negated); +inf when it was not measured."""
    if objective not in metrics:
        return float("inf")
    return metrics[objective] if LOWER_IS_BETTER[objective] else -metrics[objective]


def improvement(before: Metrics, after: Metrics, objective: Objective) -> float | None:
    """Relative improvement of the objective (0.9 = harmful rate cut by 90%); None if unmeasured."""
    if objective not in before or objective not in after or before[objective] == 0:
        return None
    change = (after[objective] - before[objective]) / abs(before[objective])
    return -change if LOWER_IS_BETTER[objective] else change


def violations(metrics: Metrics, baseline: Metrics, criterion: Criterion) -> list[str]:
    """The constraints `metrics` breaks, as readable phrases; [] when it meets them all."""
    broken = []
    limit = criterion.max_normal_ppl_increase
    if limit is not None and "normal_ppl" in metrics and "normal_ppl" in baseline:
        rise = metrics["normal_ppl"] / baseline["normal_ppl"] - 1
        if rise > limit:
            broken.append(f"normal_ppl {rise:+.1%} > +{limit:.0%}")
    if (
        criterion.max_over_refusal is not None
        and metrics.get("over_refusal", 0.0) > criterion.max_over_refusal
    ):
        broken.append(f"over_refusal {metrics['over_refusal']:.2f} > {criterion.max_over_refusal:.2f}")
    return broken


def meets(metrics: Metrics, baseline: Metrics, criterion: Criterion, objective: Objective) -> bool:
    """Constraints met and the objective improved: by at least `min_improvement` if set, else at all."""
    if violations(metrics, baseline, criterion):
        return False
    if objective not in metrics or objective not in baseline:
        return False
    gain = improvement(baseline, metrics, objective)
    if gain is None:  # the objective was 0 before: no relative gain; meeting it means not worse
        return score(metrics, objective) <= score(baseline, objective)
    return gain > 0 if criterion.min_improvement is None else gain >= criterion.min_improvement


def choose(history: list[Evaluation], criterion: Criterion, objective: Objective) -> tuple[Evaluation, str]:
    """The best evaluation after step 0, and why it was chosen."""
    baseline, candidates = history[0], history[1:] or history
    feasible = [e for e in candidates if not violations(e.metrics, baseline.metrics, criterion)]
    if feasible:
        # ties on the objective (a harmful rate of 0 at several steps) go to the model that kept
        # the most (the lower normal perplexity), then to the earlier step
        best = min(
            feasible, key=lambda e: (score(e.metrics, objective), e.metrics.get("normal_ppl", 0.0), e.step)
        )
        return best, _reason(best, baseline, criterion, objective, "best")

    def excess(e: Evaluation) -> float:
        return e.metrics.get("normal_ppl", 0.0) / baseline.metrics.get("normal_ppl", 1.0)

    best = min(candidates, key=lambda e: (excess(e), score(e.metrics, objective), e.step))
    return best, _reason(best, baseline, criterion, objective, "none feasible")


def _reason(
    best: Evaluation, baseline: Evaluation, criterion: Criterion, objective: Objective, kind: str
) -> str:
    value, before = best.metrics.get(objective), baseline.metrics.get(objective)
    text = f"step {best.step}: {objective} {value if value is None else round(value, 4)} (before {before})"
    if "normal_ppl" in best.metrics and "normal_ppl" in baseline.metrics:
        text += f", normal_ppl {best.metrics['normal_ppl'] / baseline.metrics['normal_ppl'] - 1:+.1%}"
    if kind == "best":
        limit, refusals = criterion.max_normal_ppl_increase, criterion.max_over_refusal
        bounds = ([f"normal_ppl ≤ +{limit:.0%}"] if limit is not None else []) + (
            [f"over_refusal ≤ {refusals:g}"] if refusals is not None else []
        )
        bound = f" with {' and '.join(bounds)}" if bounds else ""
        word = "lowest" if LOWER_IS_BETTER[objective] else "highest"
        return f"{text}; the {word} {objective}{bound} of the evaluations after step 0"
    broken = "; ".join(violations(best.metrics, baseline.metrics, criterion))
    return f"{text}; no evaluation met the constraints, kept the one closest to them ({broken})"


def stalled(
    history: list[Evaluation], criterion: Criterion, objective: Objective, patience: int, min_delta: float
) -> bool:
    """True when the last `patience` evaluations brought no feasible improvement over the best
    feasible one before them (the model before unlearning counts as the first)."""
    baseline, best_at, best = history[0].metrics, 0, score(history[0].metrics, objective)
    for index, e in enumerate(history[1:], start=1):
        if not violations(e.metrics, baseline, criterion) and score(e.metrics, objective) < best - min_delta:
            best_at, best = index, score(e.metrics, objective)
    return len(history) - 1 - best_at >= patience


@dataclass
class Selection:
    """Evaluates during a stage, keeps the best snapshot, restores it at the end."""

    evaluate: Callable[[Any], Metrics]
    spec: SelectSpec
    criterion: Criterion
    objective: Objective
    folder: Path | None = None  # where snapshots go (the stage's checkpoint folder); None: memory
    history: list[Evaluation] = field(default_factory=list)
    _memory: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    _checkpointed: int | None = None  # the chosen step the last checkpoint recorded

    def due(self, step: int) -> bool:
        return step % self.spec.every == 0

    def observe(self, model: Any, step: int) -> bool:
        """Evaluate at `step`, keep a snapshot if it is the best so far; True: stop training."""
        metrics = self.evaluate(model)
        self.history.append(Evaluation(step, metrics))
        log.info("evaluation at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
        if step > 0 and choose(self.history, self.criterion, self.objective)[0].step == step:
            self._save(model, step)
        patience = self.spec.patience
        return (
            patience is not None
            and step > 0
            and stalled(self.history, self.criterion, self.objective, patience, self.spec.min_delta)
        )

    def stop_reason(self) -> str:
        return (
            f"{self.objective} did not improve (with the constraints met) in the last "
            f"{self.spec.patience} evaluations"
        )

    def finish(self, model: Any) -> dict[str, Any]:
        """Load the chosen snapshot into `model`; return what goes into metrics.json."""
        chosen, reason = choose(self.history, self.criterion, self.objective)
        self._load(model, chosen.step)
        self.prune()
        log.info("checkpoint chosen: %s", reason)
        return {
            "chosen_step": chosen.step,
            "reason": reason,
            "objective": self.objective,
            "criterion": self.criterion.model_dump(),
            "evaluations": [asdict(e) for e in self.history],
        }

    def state(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.history]

    def load_state(self, rows: list[dict[str, Any]]) -> None:
        self.history = [Evaluation(int(r["step"]), dict(r["metrics"])) for r in rows]
        if self.history:  # the checkpoint these came from relies on this step's snapshot
            self._checkpointed = choose(self.history, self.criterion, self.objective)[0].step

    def _path(self, step: int) -> Path:
        if self.folder is None:
            raise RuntimeError("this selection keeps no snapshots: it was made without a folder")
        return self.folder / f"best-step-{step:07d}.pt"

    def _save(self, model: Any, step: int) -> None:
        weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        if self.folder is None:
            self._memory = {step: weights}
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(step).with_suffix(".tmp")
        torch.save(weights, tmp)
        tmp.replace(self._path(step))
        # at most two snapshots on disk: this one, and the one the last checkpoint relies on
        keep = {self._path(step)} | (
            {self._path(self._checkpointed)} if self._checkpointed is not None else set()
        )
        for old in self.folder.glob("best-step-*.pt"):
            if old not in keep:
                old.unlink()

    def prune(self) -> None:
        """Delete snapshots other than the chosen one. Called when a checkpoint records the
        evaluations, so a run resumed from any checkpoint still finds its chosen snapshot."""
        if self.folder is None or not self.folder.exists() or not self.history:
            return
        self._checkpointed = choose(self.history, self.criterion, self.objective)[0].step
        for old in self.folder.glob("best-step-*.pt"):
            if old != self._path(self._checkpointed):
                old.unlink()

    def _load(self, model: Any, step: int) -> None:
        if step == 0:
            return  # nothing after step 0 was evaluated: keep the model as it is
        weights = (
            self._memory.get(step)
            if self.folder is None
            else torch.load(self._path(step), map_location="cpu", weights_only=True)
        )
        if weights is None:
            raise RuntimeError(f"the snapshot of step {step} is missing")
        load_trainable_(model, weights, f"the snapshot of step {step}")


def light_evaluator(
    tokenizer: Any,
    eval_spec: EvalSpec,
    fmt: PromptFormat,
    judge: Judge | None,
    sets: EvalSets,
    forget: list[Example],
    normal: list[Example],
    n: int,
    objective: Objective,
    criterion: Criterion,
) -> Callable[[Any], Metrics]:
    """A cheap evaluation on the first `n` examples of each set the criterion reads: forget NLL,
    normal perplexity (held-out eval.normal, else the training normal set), and the objective's
    set (harmful prompts, judged; copyright prefixes) and benign prompts if over-refusal is bounded."""
    small = EvalSets(
        harmful_prompts=sets.harmful_prompts[:n] if objective == "harmful_rate" else [],
        benign_prompts=sets.benign_prompts[:n] if criterion.max_over_refusal is not None else [],
        normal=(sets.normal or normal)[:n],
        copyright_forget=sets.copyright_forget[:n] if objective == "bleu" else [],
    )
    spec = eval_spec.model_copy(update={"max_examples": n})

    def run(model: Any) -> Metrics:
        return evaluate(
            model, tokenizer, spec, fmt, judge, forget=forget[:n], reference_responses=None, sets=small
        ).metrics

    return run


def averaged_over_formats(evaluate: Callable[[Any], Metrics], formats: list[str]) -> Callable[[Any], Metrics]:
    """`evaluate` with `harmful_rate` the mean over the training format and `formats` (each
    measured on the same validation prompts), the training format's own kept as
    `harmful_rate@train`: a checkpoint chosen in one format may be one whose forgetting has not
    reached the formats a user asks in (the goal holds in every format)."""

    def run(model: Any) -> Metrics:
        metrics = dict(evaluate(model))
        if "harmful_rate" in metrics:
            rates = [metrics["harmful_rate"], *(metrics[f"harmful_rate@{f}"] for f in formats)]
            metrics["harmful_rate@train"] = metrics["harmful_rate"]
            metrics["harmful_rate"] = sum(rates) / len(rates)
        return metrics

    return run
