"""execute_job's guarantees: one claim at a time, takeover after a lost heartbeat, fenced writes,
orphans requeued, and a safe, reproducible adapter archive."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from service_helpers import job_spec
from sqlalchemy import select, update

from lethe.core.spec.job import parse_spec
from lethe.service.infra.db import Job, JobEvent, transaction, utcnow
from lethe.service.jobs import records as jobs
from lethe.service.jobs.claim import Outcome, claim_job
from lethe.service.jobs.execution import execute_job, requeue_orphans
from lethe.service.storage import artifacts
from lethe.service.storage.datasets import DatasetMeta, upload_dataset

pytest_plugins = ["service_fixtures"]  # the service fixtures: settings, queued_runtime, fake_engine


def new_job(rt, steps: int = 3, **overrides) -> Job:  # noqa: ANN001
    data = Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_forget.jsonl"
    with open(data, "rb") as f:
        ds = upload_dataset(rt, f, "tiny_forget.jsonl", DatasetMeta(name="f"), tenant="default")
    spec = job_spec(f"dataset:{ds.id}", **overrides)
    spec["unlearn"]["train"]["steps"] = steps
    return jobs.create_job(rt, parse_spec(spec), tenant="default")


def status_of(rt, job_id) -> Job:  # noqa: ANN001
    with rt.sessions() as session:
        return session.get(Job, job_id)


def test_a_job_is_claimed_once(queued_runtime, fake_engine) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    job = new_job(rt)
    claim = claim_job(rt, job.id)
    assert claim.attempt == 1
    assert claim_job(rt, job.id) is Outcome.BUSY  # a second delivery while the first runs
    with transaction(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
    assert claim_job(rt, job.id) is Outcome.SKIPPED
    assert execute_job(rt, job.id) is Outcome.SKIPPED


def test_two_workers_racing_run_it_once(queued_runtime, fake_engine) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    job = new_job(rt)
    outcomes: list[Outcome] = []
    threads = [threading.Thread(target=lambda: outcomes.append(execute_job(rt, job.id))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count(Outcome.DONE) == 1
    assert status_of(rt, job.id).status == "succeeded" and status_of(rt, job.id).attempts == 1


def test_a_stale_lease_is_taken_over_and_fences_the_old_worker(queued_runtime, fake_engine) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    job = new_job(rt)
    old = claim_job(rt, job.id)
    with transaction(rt.sessions) as session:  # the old worker's heartbeat stopped long ago
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=rt.settings.job_lease_s + 1))
        )
    assert execute_job(rt, job.id) is Outcome.DONE
    after = status_of(rt, job.id)
    assert (after.status, after.attempts) == ("succeeded", 2)
    from lethe.service.jobs.claim import Heartbeat
    from lethe.service.jobs.execution import finish

    beat = Heartbeat(rt, old)
    beat.beat()
    assert beat.lost.is_set() and beat.cancel.is_set()  # the old worker learns it lost the job
    try:
        finish(rt, old, "failed", rows=[], error="late")
    except Exception as err:  # noqa: BLE001
        assert type(err).__name__ == "LeaseLost"
    assert status_of(rt, job.id).status == "succeeded"  # and its late write changed nothing


def test_cancel_request_reaches_the_heartbeat(queued_runtime, fake_engine) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    job = new_job(rt, steps=5000, name="slow")
    runner = threading.Thread(target=execute_job, args=(rt, job.id))
    runner.start()
    while status_of(rt, job.id).status != "running":
        time.sleep(0.01)
    began = time.monotonic()
    jobs.cancel_job(rt, job.id, tenant="default")
    runner.join(timeout=10)
    assert status_of(rt, job.id).status == "cancelled"
    assert time.monotonic() - began < 2
    with rt.sessions() as session:
        kinds = list(session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job.id)))
    assert "cancel_requested" in kinds


def test_orphans_of_a_stopped_process_are_requeued(queued_runtime, fake_engine) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    running, waiting = new_job(rt), new_job(rt)
    claim_job(rt, running.id)
    assert [job_id for job_id, _ in requeue_orphans(rt)] == [running.id, waiting.id]
    assert status_of(rt, running.id).status == "queued"


def test_adapter_archive_is_reproducible_and_never_follows_links(tmp_path: Path) -> None:
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "sub").mkdir()
    (adapter / "sub" / "w.bin").write_bytes(b"123")
    (adapter / "secret").symlink_to("/etc/passwd")
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    artifacts.build_adapter_archive(adapter, first)
    time.sleep(1.1)  # a different mtime must not change the bytes
    (adapter / "adapter_config.json").touch()
    artifacts.build_adapter_archive(adapter, second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(first.read_bytes())) as tar:
        assert tar.getnames() == [
            "adapter",
            "adapter/adapter_config.json",
            "adapter/sub",
            "adapter/sub/w.bin",
        ]
        assert {m.uid for m in tar.getmembers()} == {0}
    out = tmp_path / "x"
    artifacts.safe_extract(first, out)
    assert (out / "adapter" / "sub" / "w.bin").read_bytes() == b"123"


def test_celery_task_retries_while_another_worker_holds_the_job(monkeypatch) -> None:  # noqa: ANN001
    from celery.exceptions import Retry

    from lethe.worker import tasks

    asked: dict = {}

    def retry(**options) -> Retry:  # noqa: ANN003
        asked.update(options)
        return Retry("later")

    outcomes = iter([Outcome.BUSY, Outcome.DONE])
    monkeypatch.setattr(tasks, "worker_runtime", lambda: None)
    monkeypatch.setattr(tasks, "execute_job", lambda rt, job_id, drain=None: next(outcomes))
    monkeypatch.setattr(tasks.run_job_task, "retry", retry)
    job_id = "00000000-0000-0000-0000-000000000001"
    assert tasks.run_job_task.apply(args=[job_id]).state == "RETRY"
    assert asked["countdown"] == tasks.Settings().job_lease_s  # look again once the lease can expire
    assert tasks.run_job_task.apply(args=[job_id]).get() == "done"
    conf = tasks.app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
