"""What a caller adds to a training run: progress reports, cancellation, pausing, the fence
before every write and the default checkpoint interval. Kept apart from the loop (engine.py) so the
service and the CLI depend on these small types only."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cancelled", "Paused", "Progress", "ProgressTicker", "RunHooks"]


class Cancelled(Exception):
    """Raised when `should_cancel` answered True; the run stops before its next step."""


class Paused(Exception):
    """Raised when `should_pause` answered True (a worker shutting down): the stage saved a
    checkpoint after its last step and stopped; running it again resumes there."""


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int  # done so far, in `unit`s
    total: int
    losses: dict[str, float]
    eta_s: float | None
    elapsed_s: float
    unit: str = "step"  # "step" while training; "example" while generating or evaluating


class ProgressTicker:
    """Progress of a stage that is not training (answers, evaluation, probes): `advance(n)` after
    each n units (examples, probes) reports done/total with an ETA through `hooks.on_progress`."""

    def __init__(self, hooks: RunHooks, stage: str, total: int, unit: str = "example") -> None:
        self.hooks, self.stage, self.total, self.done, self.unit = hooks, stage, total, 0, unit
        self.began = time.monotonic()

    def advance(self, n: int) -> None:
        done = min(self.done + n, self.total)
        if done == self.done:  # nothing new to report
            return
        self.done = done
        if self.hooks.on_progress is None:
            return
        elapsed = time.monotonic() - self.began
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        self.hooks.on_progress(Progress(self.stage, self.done, self.total, {}, eta, elapsed, self.unit))


@dataclass
class RunHooks:
    """What the service adds to a run: callbacks for stage changes, progress and cancellation, and
    the checkpoint interval of stages whose spec sets none (a run-time choice of the deployment,
    kept out of the spec so that a resumed job never depends on the worker's settings).

    `fence` is called before every write to the run folder (a train log row, a checkpoint, any
    file of `lethe.core.run.folder`); it raises to stop a run that may no longer write, e.g. a
    service worker whose job another worker took over while this one stood still: its late rows
    would otherwise land in the folder the new attempt is writing."""

    on_stage: Callable[[str], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    should_cancel: Callable[[], bool] | None = None
    checkpoint_every: int = 0
    fence: Callable[[], None] | None = None
    should_pause: Callable[[], bool] | None = None
    # called with each checkpoint folder once it is complete on disk (the service copies the run
    # folder to object storage there, so a worker on another machine can resume the job)
    on_checkpoint: Callable[[Path], None] | None = None

    def cancelled(self) -> bool:
        return bool(self.should_cancel and self.should_cancel())

    def pausing(self) -> bool:
        return bool(self.should_pause and self.should_pause())

    def check_fence(self) -> None:
        if self.fence is not None:
            self.fence()

    def checkpointed(self, folder: Path) -> Path:
        """Tell the caller that `folder` is a complete checkpoint now; return it."""
        if self.on_checkpoint is not None:
            self.on_checkpoint(folder)
        return folder
