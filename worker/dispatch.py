"""How a queued job reaches a worker: one `Dispatcher` interface, two transports.

`CeleryDispatcher` sends one task per job to the job's queue (`gpu` or `cpu`) on the broker;
`InProcessDispatcher` (the embedded mode) runs jobs on threads of the API process. Both end in
`lethe.service.execution.execute_job`, so the code paths differ only in the transport.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable

from lethe.service.execution import Outcome, execute_job, requeue_orphans
from lethe.service.runtime import Dispatcher, Runtime
from lethe.service.settings import Settings

log = logging.getLogger(__name__)
TASK_NAME = "lethe.run_job"


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        from .celery_app import make_celery

        self.app = make_celery(settings)

    def dispatch(self, job_id: uuid.UUID, queue: str) -> None:
        # A short publish retry: the API answers 503 quickly when the broker is down.
        self.app.send_task(TASK_NAME, args=[str(job_id)], queue=queue, retry=True,
                           retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5})

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.app.close()

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)


class InProcessDispatcher:
    """Worker threads consuming an in-memory queue; jobs left over by a previous process
    (queued, or running when it stopped) are queued again at start."""

    def __init__(self, execute: Callable[[uuid.UUID], Outcome], threads: int, retry_after_s: float,
                 recover: Callable[[], list[tuple[uuid.UUID, str]]] | None = None) -> None:
        self.execute, self.retry_after_s, self.recover = execute, retry_after_s, recover
        self.queue: queue.Queue[uuid.UUID | None] = queue.Queue()
        self.threads = [threading.Thread(target=self._loop, name=f"lethe-worker-{i}", daemon=True)
                        for i in range(threads)]

    def dispatch(self, job_id: uuid.UUID, queue: str) -> None:
        self.queue.put(job_id)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        for job_id, queue_name in (self.recover() if self.recover else []):
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
                if self.execute(job_id) is Outcome.BUSY:
                    timer = threading.Timer(self.retry_after_s, self.dispatch, (job_id, "cpu"))
                    timer.daemon = True
                    timer.start()
            except Exception:
                log.exception("job %s: the worker failed outside the job", job_id)


def attach_dispatcher(rt: Runtime) -> Dispatcher:
    """Give the runtime the dispatcher its settings ask for (a broker URL means Celery)."""
    if rt.settings.broker_url:
        rt.dispatcher = CeleryDispatcher(rt.settings)
    else:
        rt.dispatcher = InProcessDispatcher(lambda job_id: execute_job(rt, job_id),
                                            rt.settings.inprocess_workers, rt.settings.job_lease_s,
                                            recover=lambda: requeue_orphans(rt))
    return rt.dispatcher
