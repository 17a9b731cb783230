"""The training loop shared by every stage: fine-tuning and each unlearning method.

One optimizer step = `grad_accum` micro-batches. A micro-batch holds the rows every term needs
(rows.py); `step.micro_batch_loss` runs one forward per kind of rows, each at its own width, and at
most one inference-mode reference forward per kind (none when `train.cache_reference` precomputed
the reference's outputs before the first step). Data order, random answers and dropout are pure functions of
(seed, step), so a run resumed from a checkpoint takes exactly the steps an uninterrupted run
would. With a `Selection`, the stage evaluates every N steps, may stop early, and ends with the
weights of its best evaluation. Under data parallelism (distributed.py) each rank scores its share
of every step's rows, gradients and logged values are summed across ranks, and rank 0 alone
evaluates, writes checkpoints and decides (cancel, pause, stop), its decisions reaching the others
through `dp.agree`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lethe.core.data.tokens import collate, pad_id_of
from lethe.core.evaluation.selection import Selection
from lethe.core.methods import Term
from lethe.core.models.reference import Reference
from lethe.core.spec.fields import PromptFormat, TrainConfig
from lethe.core.training import distributed as dp
from lethe.core.training.checkpoint import (
    append_log_row,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    rewrite_log,
    save_checkpoint,
)
from lethe.core.training.hooks import Cancelled, Paused, Progress, RunHooks
from lethe.core.training.refcache import ReferenceSource, as_source, build_cache
from lethe.core.training.rows import (
    StageData,
    encode_rows,
    epoch_order,
    micro_batch_rows,
    mix_seed,
    planned_rows,
    row_kinds,
)
from lethe.core.training.step import (
    enable_gradient_checkpointing,
    micro_batch_loss,
    steered_layer,
    wanted_reference,
)

__all__ = [
    "Cancelled",
    "Paused",
    "Progress",
    "RunHooks",
    "Stage",
    "StageData",
    "StageResult",
    "epoch_order",
    "micro_batch_loss",
    "micro_batch_rows",
    "mix_seed",
    "optimizer_step",
    "plan_steps",
    "run_stage",
]

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    steps: int
    stopped_reason: str
    log: list[dict[str, Any]]
    selection: dict[str, Any] | None = None  # chosen step, why, and every evaluation


def with_default_checkpoints(train: TrainConfig, every: int) -> TrainConfig:
    """`train` with checkpoints every `every` steps when it sets no interval itself (0 included)."""
    if every <= 0 or "checkpoint_every" in train.model_fields_set:
        return train
    return train.model_copy(update={"checkpoint_every": every})


def plan_steps(train: TrainConfig, n_examples: int) -> int:
    """Optimizer steps for a stage: `steps`, else epochs over the main data."""
    if train.steps is not None:
        return train.steps
    per_step = train.batch_size * train.grad_accum
    assert train.epochs is not None  # TrainConfig's validator asks for steps or epochs
    return max(1, math.ceil(train.epochs * n_examples / per_step))


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
    selection: Selection | None = None


def optimizer_step(
    model: Any, tokenizer: Any, reference: Reference | ReferenceSource | None, stage: Stage, step: int
) -> dict[str, float]:
    """Accumulate `grad_accum` micro-batches and return the mean of each term (and the total).
    With `train.sam_rho`, the forget terms' gradient is the sharpness-aware one (`_sam_gradients`)."""
    if stage.train.sam_rho > 0:
        return _sam_gradients(model, tokenizer, reference, stage, step)
    return _accumulate(model, tokenizer, reference, stage, step, stage.terms)


def _accumulate(
    model: Any,
    tokenizer: Any,
    reference: Reference | ReferenceSource | None,
    stage: Stage,
    step: int,
    terms: list[Term],
) -> dict[str, float]:
    """Backward of `terms` over the step's micro-batches into `.grad`; each term's mean."""
    # dropout depends on the step (and rank) only: resumable, and every pass of a SAM step draws alike
    torch.manual_seed(mix_seed(stage.seed, 4, step) + dp.rank())
    kinds = row_kinds(terms)
    sums: dict[str, float] = {}
    device = next(model.parameters()).device
    share = dp.share_of(stage.train, step)  # with data parallelism, this rank's part of the step
    with dp.summed_gradients(model):
        for micro in share.micros:
            rows = micro_batch_rows(stage.data, kinds, micro, share.batch_size, stage.seed)
            encoded, slices, keys = encode_rows(tokenizer, stage.fmt, rows)
            batch = {k: v.to(device) for k, v in collate(encoded, pad_id_of(tokenizer)).items()}
            # backward inside, group by group of kinds: one group's activations alive at a time
            loss, values = micro_batch_loss(
                model, reference, terms, batch, slices, keys, backward=1 / share.accum
            )
            values["loss"] = float(loss.detach())
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / share.accum
    return dp.reduce_values(sums)


def _sam_gradients(
    model: Any, tokenizer: Any, reference: Reference | ReferenceSource | None, stage: Stage, step: int
) -> dict[str, float]:
    """One-step SAM on the forget terms (Fan et al., arXiv 2502.05374): with g their gradient at
    the weights w, take it again at w + rho * g / |g| (the direction a relearning step would
    undo them fastest) and restore w; the retain terms' gradient is taken at w. Three passes
    over the rows instead of one: the forget rows twice, the retain rows once."""
    forget_side = [t for t in stage.terms if t.rows != "normal"]
    retain = [t for t in stage.terms if t.rows == "normal"]
    if not forget_side:  # nothing to smooth
        return _accumulate(model, tokenizer, reference, stage, step, retain)
    params = [p for p in model.parameters() if p.requires_grad]
    _accumulate(model, tokenizer, reference, stage, step, forget_side)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = stage.train.sam_rho / (float(norm) + 1e-12)
    saved = [p.detach().clone() for p in params]  # copied back, not subtracted: exact in floats
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g * scale)
            p.grad = None
    values = _accumulate(model, tokenizer, reference, stage, step, forget_side)
    with torch.no_grad():
        for p, w in zip(params, saved, strict=True):
            p.copy_(w)
    if retain:
        kept = _accumulate(model, tokenizer, reference, stage, step, retain)
        values = {**values, **kept, "loss": values["loss"] + kept["loss"]}
    return values


def _apply_update(model: Any, optimizer: Any, scheduler: Any, train: TrainConfig) -> float | None:
    grad_norm = None
    if train.max_grad_norm is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def prepare_reference(
    model: Any, tokenizer: Any, stage: Stage, reference: Reference | ReferenceSource | None, total: int
) -> ReferenceSource | None:
    """The live reference, or with `train.cache_reference` its outputs on every row of the run,
    computed now so that no step runs a reference forward."""
    source = as_source(reference)
    wanted = wanted_reference(stage.terms)
    if source is None or not wanted or not stage.train.cache_reference:
        return source
    auto = stage.train.cache_reference == "auto"
    if auto and any(needs - {"logp"} for needs in wanted.values()):
        return source  # logits and activations cost vocabulary- or width-sized memory per position
    micro_batches, size = total * stage.train.grad_accum, stage.train.batch_size
    rows = planned_rows(stage.data, set(wanted), micro_batches, size, stage.seed)
    distinct, visits = sum(map(len, rows.values())), micro_batches * size * len(wanted)
    if auto and distinct >= visits:
        return source  # every row is read about once: a cache would cost what the steps save
    log.info("reference cached: %d distinct rows for %d row visits", distinct, visits)
    device = next(model.parameters()).device
    return build_cache(
        source,
        tokenizer,
        stage.fmt,
        rows,
        wanted,
        steered_layer(model, stage.terms),
        batch_size=max(8, stage.train.batch_size),
        device=device,
    )


def _resume(
    model: Any, stage: Stage, optimizer: Any, scheduler: Any, hooks: RunHooks
) -> tuple[int, list[dict], StageResult | None]:
    """Restore the stage's last checkpoint, if any; a finished stage's result is returned as is."""
    found = latest_checkpoint(stage.checkpoint_dir) if stage.checkpoint_dir else None
    if found is None:
        return 0, [], None
    start, log = load_checkpoint(found, model, optimizer, scheduler)
    hooks.check_fence()
    rewrite_log(stage.log_path, log)  # drop rows of steps taken after that checkpoint
    meta = read_meta(found)
    if stage.selection is not None:
        stage.selection.load_state(meta.get("extra", {}).get("evaluations", []))
    if meta.get("complete"):
        chosen = meta.get("extra", {}).get("selection")
        return (
            start,
            log,
            StageResult(steps=len(log), stopped_reason=meta["reason"], log=log, selection=chosen),
        )
    return start, log, None


def run_stage(
    model: Any,
    tokenizer: Any,
    stage: Stage,
    hooks: RunHooks | None = None,
    reference: Reference | ReferenceSource | None = None,
) -> StageResult:
    """Train `model` in place for one stage; resume from the stage's last checkpoint if any."""
    hooks, selection = hooks or RunHooks(), stage.selection
    total = plan_steps(stage.train, len(stage.data.forget))
    optimizer, scheduler = make_optimizer(model, stage.train, total)
    dp.agree(f"{stage.name}: start", 0)  # data parallel: every rank reads the checkpoints alike
    start, log, finished = _resume(model, stage, optimizer, scheduler, hooks)
    if finished is not None:
        return finished
    dp.sync_weights(model)
    source = prepare_reference(model, tokenizer, stage, reference, total)
    if stage.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if selection is not None and not selection.history:
        selection.observe(model, 0)  # the model before this stage: the constraints' baseline
    model.train()
    began, reason = time.monotonic(), "max_steps"
    for step in range(start, total):
        if dp.agree(f"{stage.name}: step {step + 1}", int(hooks.cancelled())):  # rank 0 decides
            raise Cancelled(f"cancelled before step {step + 1} of stage {stage.name}")
        values = optimizer_step(model, tokenizer, source, stage, step)
        grad_norm = _apply_update(model, optimizer, scheduler, stage.train)
        row = {"stage": stage.name, "step": step + 1, **values, "lr": scheduler.get_last_lr()[0]}
        row["grad_norm"] = grad_norm
        log.append(row)
        hooks.check_fence()  # a process that lost its job must not add a row (a duplicate step)
        append_log_row(stage.log_path, row)
        done = step + 1
        _report(hooks, stage, done, total, values, began, done - start)
        stop = selection is not None and selection.due(done) and _observe(hooks, selection, model, done)
        pause = hooks.pausing() and done < total and not stop  # stopping: keep this step's work
        decided = dp.agree(f"{stage.name}: after {done}", int(stop) + 2 * int(pause))  # rank 0's
        stop, pause = bool(decided & 1), bool(decided & 2)
        if (pause or _should_checkpoint(stage, done, total)) and not stop:
            state = (optimizer, scheduler)
            _checkpoint(model, stage, state, hooks, f"step-{done:07d}", log, _extra(selection))
        if pause:
            raise Paused(f"paused after step {done} of stage {stage.name}")
        if stop and selection is not None:
            reason = selection.stop_reason()
            break
        if (reached := _forget_nll_reached(stage.train, row)) is not None:
            reason = reached
            break
    chosen = _finish_selection(model, selection, len(log))
    dp.sync_weights(model)  # the selected weights (rank 0 alone evaluates) on every rank
    if stage.train.checkpoint_every:
        extra = {**_extra(selection), "selection": chosen}
        _checkpoint(model, stage, (optimizer, scheduler), hooks, "final", log, extra, reason)
    model.eval()
    return StageResult(steps=len(log), stopped_reason=reason, log=log, selection=chosen)


def _checkpoint(
    model: Any,
    stage: Stage,
    state: tuple[Any, Any],
    hooks: RunHooks,
    name: str,
    log: list[dict[str, Any]],
    extra: dict[str, Any],
    final_reason: str | None = None,
) -> None:
    """Save a checkpoint of the stage (rank 0 only; `final_reason` marks the stage's last one)
    and hand it to the service (`checkpointed`: copied to object storage)."""
    if stage.checkpoint_dir is None or not dp.is_main():
        return
    hooks.check_fence()
    optimizer, scheduler = state
    complete = final_reason is not None
    reason = final_reason or ""
    folder = stage.checkpoint_dir / name
    saved = save_checkpoint(folder, model, optimizer, scheduler, len(log), log, complete, reason, extra)
    hooks.checkpointed(saved)


def _forget_nll_reached(train: TrainConfig, row: dict[str, Any]) -> str | None:
    """Why the stage stops early on `stop_forget_nll`, or None to go on."""
    forget_nll = row.get("forget_nll")
    if train.stop_forget_nll is None or forget_nll is None or forget_nll < train.stop_forget_nll:
        return None
    return f"forget_nll {forget_nll:.3f} reached stop_forget_nll {train.stop_forget_nll}"


def _observe(hooks: RunHooks, selection: Selection, model: Any, step: int) -> bool:
    """Evaluate for checkpoint selection (which may keep a snapshot in the checkpoint folder)."""
    hooks.check_fence()
    return selection.observe(model, step)


def _finish_selection(model: Any, selection: Selection | None, steps: int) -> dict[str, Any] | None:
    """Evaluate the last step if it was not, then load the chosen checkpoint's weights."""
    if selection is None:
        return None
    if selection.history[-1].step != steps:
        selection.observe(model, steps)
    return selection.finish(model)


def _extra(selection: Selection | None) -> dict[str, Any]:
    """What a checkpoint keeps of the selection: its evaluations (snapshots of other steps go)."""
    if selection is None:
        return {}
    selection.prune()
    return {"evaluations": selection.state()}


def _should_checkpoint(stage: Stage, done: int, total: int) -> bool:
    every = stage.train.checkpoint_every
    return bool(every and done % every == 0 and done < total)


def _report(
    hooks: RunHooks,
    stage: Stage,
    done: int,
    total: int,
    values: dict[str, float],
    began: float,
    steps_this_run: int,
) -> None:
    if hooks.on_progress is None:
        return
    elapsed = time.monotonic() - began
    eta = elapsed / steps_this_run * (total - done) if steps_this_run else None
    hooks.on_progress(Progress(stage.name, done, total, dict(values), eta, elapsed))
