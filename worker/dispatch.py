"""How a queued job reaches a worker: one `Dispatcher` interface, two transports.

`CeleryDispatcher` sends one task per job to the job's queue (`gpu` or `cpu`) on the broker;
`InProcessDispatcher` (the embedded mode) runs jobs on threads of the API process. Both end in
`lethe.service.jobs.execution.execute_job`, so the code paths differ only in the transport.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

from lethe.service.infra.runtime import Dispatcher, Runtime
from lethe.service.infra.settings import Settings
from lethe.service.jobs.claim import Outcome
from lethe.service.jobs.execution import execute_job, next_waiting, requeue_orphans

log = logging.getLogger(__name__)
TASK_NAME = "lethe.run_job"
QUEUES = ("cpu", "gpu")


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        from lethe.worker.celery_app import make_celery

        self.app = make_celery(settings)
        self.grace_s = settings.job_lease_s  # how long an unacknowledged message's worker has to act

    def dispatch(self, job_id: uuid.UUID, queue: str) -> None:
        # A short publish retry: the API answers 503 quickly when the broker is down.
        self.app.send_task(
            TASK_NAME,
            args=[str(job_id)],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.app.close()

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def pending(self) -> set[uuid.UUID] | None:
        """Jobs the broker holds for a live consumer (waiting in a queue, or delivered and due to
        be acted on less than a lease ago: see `broker_scan`); None when the transport cannot be
        inspected (only Redis can)."""
        from lethe.worker.broker_scan import redis_pending

        with self.app.connection_for_read() as conn:
            if conn.transport_cls not in ("redis", "rediss"):
                return None
            return redis_pending(conn.default_channel, QUEUES, time.time(), self.grace_s)


class InProcessDispatcher:
    """Worker threads consuming an in-memory queue; jobs left over by a previous process
    (queued, or running when it stopped) are queued again at start."""

    def __init__(
        self,
        execute: Callable[[uuid.UUID], Outcome],
        threads: int,
        retry_after_s: float,
        recover: Callable[[], list[tuple[uuid.UUID, str]]] | None = None,
        defer_s: float | None = None,
        next_waiting: Callable[[str], uuid.UUID | None] | None = None,
    ) -> None:
        self.execute, self.retry_after_s, self.recover = execute, retry_after_s, recover
        self.next_waiting = next_waiting  # the job in turn for a slot that freed (see _start_next)
        self.defer_s = retry_after_s if defer_s is None else defer_s
        self.queue: queue.Queue[uuid.UUID | None] = queue.Queue()
        self._held: Counter[uuid.UUID] = Counter()  # queued, running or waiting for a retry here
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, name=f"lethe-worker-{i}", daemon=True) for i in range(threads)
        ]

    def dispatch(self, job_id: uuid.UUID, queue: str) -> None:
        self._hold(job_id, +1)
        self.queue.put(job_id)

    def _hold(self, job_id: uuid.UUID, change: int) -> None:
        with self._lock:
            self._held[job_id] += change
            if self._held[job_id] <= 0:
                del self._held[job_id]

    def pending(self) -> set[uuid.UUID] | None:
        with self._lock:
            return set(self._held)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        for job_id, queue_name in self.recover() if self.recover else []:
            self.dispatch(job_id, queue_name)

    def stop(self) -> None:
        # Threads in the middle of a job are daemons: the job stays `running` and is queued again
        # (resuming from its checkpoint) when the service starts next.
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=1)

    def check(self) -> None:
        if not any(t.is_alive() for t in self.threads):
            raise RuntimeError("the in-process worker threads are not running")

    def _loop(self) -> None:
        while (job_id := self.queue.get()) is not None:
            try:
                outcome = self.execute(job_id)
                if outcome in (Outcome.BUSY, Outcome.DEFERRED):
                    wait = self.retry_after_s if outcome is Outcome.BUSY else self.defer_s
                    self._hold(job_id, +1)  # held while the timer waits; put back by it
                    timer = threading.Timer(wait, self.queue.put, (job_id,))
                    timer.daemon = True
                    timer.start()
                elif outcome is Outcome.DONE:
                    self._start_next()
            except Exception:
                log.exception("job %s: the worker failed outside the job", job_id)
            finally:
                self._hold(job_id, -1)

    def _start_next(self) -> None:
        """A job ended: put the job in turn for its slot in the queue now, not at its retry."""
        if self.next_waiting is None:
            return
        for name in QUEUES:
            waiting = self.next_waiting(name)
            if waiting is not None:
                self.dispatch(waiting, name)
                return


def attach_dispatcher(rt: Runtime) -> Dispatcher:
    """Give the runtime the dispatcher its settings ask for (a broker URL means Celery)."""
    if rt.settings.broker_url:
        rt.dispatcher = CeleryDispatcher(rt.settings)
    else:
        rt.dispatcher = InProcessDispatcher(
            lambda job_id: execute_job(rt, job_id),
            rt.settings.inprocess_workers,
            rt.settings.job_lease_s,
            recover=lambda: requeue_orphans(rt),
            defer_s=rt.settings.quota_retry_after_s,
            next_waiting=lambda queue: next_waiting(rt, queue),
        )
    return rt.dispatcher
