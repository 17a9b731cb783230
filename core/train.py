"""The training loop shared by every stage: fine-tuning and each unlearning method.

One optimizer step = `grad_accum` micro-batches. A micro-batch packs the rows every term needs
(forget, random-answer, normal) into one padded batch and runs ONE forward pass over them; the
reference model, when a term needs it, runs one no-grad forward over the normal rows only. Data
order, random answers and dropout are pure functions of (seed, step), so a run resumed from a
checkpoint takes exactly the steps an uninterrupted run would.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import latest_checkpoint, load_checkpoint, read_meta, save_checkpoint
from .config import PromptFormat, TrainConfig
from .data import Example
from .losses import token_logprobs
from .methods import Rows, Term, TermInputs
from .models import Reference
from .tokens import Encoded, collate, encode, pad_id_of


class Cancelled(Exception):
    """Raised when `should_cancel` answered True; the run stops before its next step."""


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int
    losses: dict[str, float]
    eta_s: float | None
    elapsed_s: float


@dataclass
class RunHooks:
    """Callbacks the service forwards: stage changes, progress, and cancellation."""

    on_stage: Callable[[str], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    should_cancel: Callable[[], bool] | None = None

    def cancelled(self) -> bool:
        return bool(self.should_cancel and self.should_cancel())


@dataclass
class StageData:
    """Examples for one stage: `forget` is the stage's main data (the fine-tuning data too)."""

    forget: list[Example]
    normal: list[Example] = field(default_factory=list)
    random_answers: int = 1


@dataclass
class StageResult:
    steps: int
    stopped_reason: str
    log: list[dict[str, Any]]


def plan_steps(train: TrainConfig, n_examples: int) -> int:
    """Optimizer steps for a stage: `steps`, else epochs over the main data."""
    if train.steps is not None:
        return train.steps
    per_step = train.batch_size * train.grad_accum
    return max(1, math.ceil(train.epochs * n_examples / per_step))  # type: ignore[operator]


def mix_seed(*parts: int) -> int:
    """A deterministic 31-bit seed from integers (stable across processes, unlike str hashes)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % 2_147_483_647
    return value


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int) -> tuple[int, ...]:
    return tuple(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist())


def epoch_order(n: int, seed: int, salt: int, index: int, count: int) -> list[int]:
    """Items index..index+count-1 of an endless stream of shuffled passes over range(n).

    Each pass is a permutation seeded by (seed, salt, pass number): reshuffled every epoch (the
    reference code never shuffled its forget set) and reproducible from the index alone.
    """
    out = []
    for position in range(index, index + count):
        epoch, offset = divmod(position, n)
        out.append(_permutation(n, mix_seed(seed, salt, epoch))[offset])
    return out


def micro_batch_rows(data: StageData, kinds: set[Rows], micro: int, batch_size: int,
                     seed: int) -> dict[Rows, list[tuple[str, str]]]:
    """(prompt, response) pairs of each row kind for micro-batch number `micro`.

    Random rows pair each forget prompt with `random_answers` normal answers drawn independently
    per prompt (the reference code reused the same 5 answers for the whole batch).
    """
    start = micro * batch_size
    forget = [data.forget[i] for i in epoch_order(len(data.forget), seed, 1, start, batch_size)]
    rows: dict[Rows, list[tuple[str, str]]] = {"forget": [(e.prompt, e.response) for e in forget]}
    if "normal" in kinds:
        normal = [data.normal[i] for i in epoch_order(len(data.normal), seed, 2, start, batch_size)]
        rows["normal"] = [(e.prompt, e.response) for e in normal]
    if "random" in kinds:
        # keyed by stream position, not micro-batch, so batch x accumulation splits draw alike
        draws = [random.Random(mix_seed(seed, 3, start + i)) for i in range(len(forget))]
        rows["random"] = [(e.prompt, rng.choice(data.normal).response)
                          for e, rng in zip(forget, draws) for _ in range(data.random_answers)]
    return rows


def _encode_rows(tokenizer: Any, fmt: PromptFormat,
                 rows: dict[Rows, list[tuple[str, str]]]) -> tuple[list[Encoded], dict[Rows, slice]]:
    encoded: list[Encoded] = []
    slices: dict[Rows, slice] = {}
    for kind, pairs in rows.items():
        start = len(encoded)
        encoded += [encode(tokenizer, p, r, fmt, example_id=kind) for p, r in pairs]
        slices[kind] = slice(start, len(encoded))
    return encoded, slices


def micro_batch_loss(model: Any, reference: Reference | None, terms: list[Term], batch: dict,
                     slices: dict[Rows, slice]) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms over one packed batch: one forward (+ one reference forward)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp, mask = token_logprobs(logits, batch["labels"])
    ref_logits = {}
    for kind in {t.rows for t in terms if t.needs_reference}:
        sl = slices[kind]
        ref = reference.logits(batch["input_ids"][sl], batch["attention_mask"][sl])  # type: ignore[union-attr]
        ref_logits[kind] = ref[:, :-1]
    total = logits.new_zeros((), dtype=torch.float32)
    values: dict[str, float] = {}
    for term in terms:
        sl = slices[term.rows]
        inputs = TermInputs(logp[sl], mask[sl], logits[sl, :-1], ref_logits.get(term.rows))
        value = term.loss(inputs).mean()
        total = total + term.weight * value
        values[term.name] = float(value.detach())
    return total, values


def make_optimizer(model: Any, train: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and a linear schedule with warm-up."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, train.warmup_steps, total_steps)
    return optimizer, scheduler


@dataclass
class Stage:
    """Everything one training stage needs besides the model."""

    name: str
    terms: list[Term]
    data: StageData
    train: TrainConfig
    fmt: PromptFormat
    seed: int
    checkpoint_dir: Path | None = None
    log_path: Path | None = None


def optimizer_step(model: Any, tokenizer: Any, reference: Reference | None, stage: Stage,
                   step: int) -> dict[str, float]:
    """Accumulate `grad_accum` micro-batches and return the mean of each term (and the total)."""
    kinds = {t.rows for t in stage.terms}
    torch.manual_seed(mix_seed(stage.seed, 4, step))  # dropout depends on the step only: resumable
    sums: dict[str, float] = {}
    device = next(model.parameters()).device
    for a in range(stage.train.grad_accum):
        micro = step * stage.train.grad_accum + a
        rows = micro_batch_rows(stage.data, kinds, micro, stage.train.batch_size, stage.seed)
        encoded, slices = _encode_rows(tokenizer, stage.fmt, rows)
        batch = {k: v.to(device) for k, v in collate(encoded, pad_id_of(tokenizer)).items()}
        loss, values = micro_batch_loss(model, reference, stage.terms, batch, slices)
        (loss / stage.train.grad_accum).backward()
        values["loss"] = float(loss.detach())
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value / stage.train.grad_accum
    return sums


def _apply_update(model: Any, optimizer: Any, scheduler: Any, train: TrainConfig) -> float | None:
    grad_norm = None
    if train.max_grad_norm is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def _forget_nll(values: dict[str, float], terms: list[Term]) -> float | None:
    """The forget answers' NLL, read off the ascent term (its value is minus that NLL)."""
    return -values["forget"] if any(t.name == "forget" for t in terms) and "forget" in values else None


def run_stage(model: Any, tokenizer: Any, stage: Stage, hooks: RunHooks | None = None,
              reference: Reference | None = None) -> StageResult:
    """Train `model` in place for one stage; resume from the stage's last checkpoint if any."""
    hooks = hooks or RunHooks()
    total = plan_steps(stage.train, len(stage.data.forget))
    optimizer, scheduler = make_optimizer(model, stage.train, total)
    start, log = 0, []
    found = latest_checkpoint(stage.checkpoint_dir) if stage.checkpoint_dir else None
    if found is not None:
        start, log = load_checkpoint(found, model, optimizer, scheduler)
        _rewrite_log(stage.log_path, log)  # drop rows of steps taken after that checkpoint
        if read_meta(found).get("complete"):
            return StageResult(steps=len(log), stopped_reason=read_meta(found)["reason"], log=log)
    model.train()
    began, reason = time.monotonic(), "max_steps"
    for step in range(start, total):
        if hooks.cancelled():
            raise Cancelled(f"cancelled before step {step + 1} of stage {stage.name}")
        values = optimizer_step(model, tokenizer, reference, stage, step)
        grad_norm = _apply_update(model, optimizer, scheduler, stage.train)
        row = _log_row(stage, step, values, grad_norm, scheduler)
        log.append(row)
        _append_jsonl(stage.log_path, row)
        done = step + 1
        _report(hooks, stage, done, total, values, began, done - start)
        if _should_checkpoint(stage, done, total):
            save_checkpoint(stage.checkpoint_dir / f"step-{done:07d}", model, optimizer, scheduler, done, log)
        forget_nll = row.get("forget_nll")
        if stage.train.stop_forget_nll is not None and forget_nll is not None \
                and forget_nll >= stage.train.stop_forget_nll:
            reason = f"forget_nll {forget_nll:.3f} reached stop_forget_nll {stage.train.stop_forget_nll}"
            break
    if stage.checkpoint_dir and stage.train.checkpoint_every:
        save_checkpoint(stage.checkpoint_dir / "final", model, optimizer, scheduler, len(log), log,
                        complete=True, reason=reason)
    model.eval()
    return StageResult(steps=len(log), stopped_reason=reason, log=log)


def _log_row(stage: Stage, step: int, values: dict[str, float], grad_norm: float | None,
             scheduler: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"stage": stage.name, "step": step + 1, **values,
                           "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm}
    forget_nll = _forget_nll(values, stage.terms)
    if forget_nll is not None:
        row["forget_nll"] = forget_nll
    return row


def _should_checkpoint(stage: Stage, done: int, total: int) -> bool:
    every = stage.train.checkpoint_every
    return bool(stage.checkpoint_dir and every and done % every == 0 and done < total)


def _report(hooks: RunHooks, stage: Stage, done: int, total: int, values: dict[str, float],
            began: float, steps_this_run: int) -> None:
    if hooks.on_progress is None:
        return
    elapsed = time.monotonic() - began
    eta = elapsed / steps_this_run * (total - done) if steps_this_run else None
    hooks.on_progress(Progress(stage.name, done, total, dict(values), eta, elapsed))


def _append_jsonl(path: Path | None, row: dict[str, Any]) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _rewrite_log(path: Path | None, kept: list[dict[str, Any]]) -> None:
    """Keep other stages' rows and this stage's rows up to the checkpoint, written atomically."""
    if path is None or not path.exists():
        return
    stages = {row["stage"] for row in kept}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if r.get("stage") not in stages] + kept
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
