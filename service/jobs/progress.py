"""Engine hooks that stream a running job's stage and progress to the database.

Stage changes are written at once; progress at most every `progress_interval_s` (and always on
a stage's last step), so a fast tiny model does not turn into thousands of rows. Every write is
fenced by the claim, and cancellation comes from the heartbeat thread's flag; the hooks' `fence`
(`Heartbeat.ensure_held`) guards the engine's writes to the run folder too.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from lethe.service.infra.db import affected, transaction
from lethe.service.infra.limits import RunBudget
from lethe.service.infra.metrics import STEP_SECONDS
from lethe.service.infra.retry import transient
from lethe.service.jobs.claim import Claim, Heartbeat, fenced
from lethe.service.jobs.records import add_event

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lethe.core.training.hooks import Progress, RunHooks
    from lethe.service.infra.runtime import Runtime


def progress_payload(p: Progress) -> dict[str, Any]:
    return {
        "stage": p.stage,
        "step": p.step,
        "total": p.total,
        "losses": dict(p.losses),
        "eta_s": None if p.eta_s is None else round(p.eta_s, 2),
        "elapsed_s": round(p.elapsed_s, 2),
        "unit": p.unit,
    }


class Reporter:
    def __init__(self, rt: Runtime, claim: Claim, beat: Heartbeat) -> None:
        self.rt, self.claim, self.beat = rt, claim, beat
        self.budget = RunBudget.of_job(rt, claim.job_id)  # a job past it fails (LETHE_JOB_TIME_BUDGET_S)
        self._last_write = 0.0
        self._last_step: tuple[str, int, float] | None = None  # (stage, step, elapsed) for step time

    def hooks(self) -> RunHooks:
        from lethe.core.training.hooks import RunHooks

        return RunHooks(
            on_stage=self.on_stage,
            on_progress=self.on_progress,
            should_cancel=self.should_cancel,
            checkpoint_every=self.rt.settings.checkpoint_every,  # not in the spec: see RunHooks
            fence=self.beat.ensure_held,  # train log rows, checkpoints, run folder files
            should_pause=self.beat.drain.is_set,  # the worker is shutting down: checkpoint, stop
        )

    def should_cancel(self) -> bool:
        """A cancel request (or a lost lease) stops the run as cancelled; a spent time budget
        raises OverBudget, which fails the job with the reason."""
        if self.beat.cancel.is_set():
            return True
        self.budget.check()
        return False

    def _write(self, values: dict[str, Any], kind: str, payload: dict[str, Any]) -> None:
        """Best effort: a database blip loses one progress row, never the run."""
        try:
            with transaction(self.rt.sessions) as session:
                if affected(session.execute(fenced(self.claim).values(**values))):
                    add_event(session, self.claim.job_id, kind, payload)
        except DBAPIError as err:
            if not transient(err):
                raise
            log.warning("job %s: progress not written (database unreachable)", self.claim.job_id)

    def on_stage(self, name: str) -> None:
        if self.beat.cancel.is_set():  # between stages: stop before starting the next one
            from lethe.core.training.hooks import Cancelled

            raise Cancelled(f"cancelled before stage {name}")
        if self.beat.drain.is_set() and name != "done":  # shutting down: resume at this stage
            from lethe.core.training.hooks import Paused

            raise Paused(f"paused before stage {name}")
        self.budget.check()
        self._write({"stage": name}, "stage", {"stage": name})
        self._last_write = 0.0  # the new stage's first progress is written too

    def on_progress(self, p: Progress) -> None:
        self.budget.check()  # also where no step asks should_cancel (evaluation, probes)
        self._observe_step_time(p)
        now = time.monotonic()
        if now - self._last_write < self.rt.settings.progress_interval_s and p.step < p.total:
            return
        self._last_write = now
        payload = progress_payload(p)
        self._write({"progress": payload}, "progress", payload)

    def _observe_step_time(self, p: Progress) -> None:
        if p.unit != "step":  # examples answered or evaluated are no training steps
            return
        last = self._last_step
        if last is not None and last[0] == p.stage and p.step > last[1]:
            STEP_SECONDS.labels(p.stage).observe((p.elapsed_s - last[2]) / (p.step - last[1]))
        self._last_step = (p.stage, p.step, p.elapsed_s)
