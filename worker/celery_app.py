"""The Celery app: `celery -A lethe.worker.celery_app worker -Q cpu` (or `lethe worker`).

One job is one task, acknowledged late (a worker that dies mid-job leaves the message to be
delivered again), one at a time per worker process (prefetch 1; run one process per GPU). The
Redis visibility timeout is longer than any job so a running job is not handed to a second
worker; `execute_job`'s claim guards against that anyway.
"""

from __future__ import annotations

from celery import Celery

from lethe.service.infra.settings import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("lethe", broker=settings.broker_url or "memory://", include=["lethe.worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="cpu",
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
        worker_send_task_events=False,
    )
    return app


app = make_celery(Settings())
