"""Idempotency keys, quotas, the heartbeat check, the reconciler, storage and database failures,
and cancelling in every stage (embedded defaults, fake engine)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from service_helpers import AUTH, fake_run_job, job_spec, upload, wait_for
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from lethe.core.spec.job import parse_spec
from lethe.service.infra.db import Artifact, Dataset, Job, JobEvent, transaction, utcnow
from lethe.service.infra.object_store import StorageError
from lethe.service.jobs import records as jobs
from lethe.service.jobs.claim import Claim, Outcome, claim_job
from lethe.service.jobs.reconcile import Maintenance, Reconciler, check_heartbeats
from lethe.service.trust import auth

pytest_plugins = ["service_fixtures"]


def count(client: TestClient, model: Any) -> int:
    with client.app.state.runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)))


# ------------------------------------------------------------------ idempotency
def test_a_retried_submission_returns_the_first_job(queued_client: TestClient) -> None:
    ds = upload(queued_client).json()["reference"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = queued_client.post("/v1/jobs", json=job_spec(ds), headers=key)
    again = queued_client.post("/v1/jobs", json=job_spec(ds), headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert count(queued_client, Job) == 1
    other = queued_client.post("/v1/jobs", json=job_spec(ds, name="other"), headers=key)
    assert other.status_code == 409 and "different request body" in other.json()["detail"]
    assert queued_client.post("/v1/jobs", json=job_spec(ds)).json()["id"] != first.json()["id"]  # no key


def test_a_retry_with_another_callback_is_another_request(queued_client: TestClient) -> None:
    ds = upload(queued_client).json()["reference"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    hook = {"callback_url": "https://1.1.1.1/a"}  # an address literal: no DNS lookup offline
    first = queued_client.post("/v1/jobs", json=job_spec(ds), headers=key, params=hook)
    assert first.status_code == 201
    again = queued_client.post("/v1/jobs", json=job_spec(ds), headers=key, params=hook)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = queued_client.post(
        "/v1/jobs", json=job_spec(ds), headers=key, params={"callback_url": "https://1.1.1.1/b"}
    )
    assert other.status_code == 409 and "different request body" in other.json()["detail"]
    assert queued_client.post("/v1/jobs", json=job_spec(ds), headers=key).status_code == 409


def test_concurrent_retries_make_one_job(queued_client: TestClient) -> None:
    ds = upload(queued_client).json()["reference"]
    key = {"Idempotency-Key": "same"}
    answers: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(queued_client.post("/v1/jobs", json=job_spec(ds), headers=key))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = {r.json()["id"] for r in answers if r.status_code == 201}
    assert len(made) == 1 and {r.status_code for r in answers} <= {201, 409}
    assert count(queued_client, Job) == 1


def test_a_failed_request_releases_its_key(queued_client: TestClient, queued_runtime) -> None:  # noqa: ANN001
    ds = upload(queued_client).json()["reference"]
    key = {"Idempotency-Key": "k1"}
    queued_runtime[1].fail = True  # the broker is down: 503
    assert queued_client.post("/v1/jobs", json=job_spec(ds), headers=key).status_code == 503
    queued_runtime[1].fail = False
    assert queued_client.post("/v1/jobs", json=job_spec(ds), headers=key).status_code == 201


def test_a_retried_upload_returns_the_first_dataset(client: TestClient) -> None:
    key = {"Idempotency-Key": "upload-1"}
    first = client.post(
        "/v1/datasets", files={"file": ("a.jsonl", b'{"prompt": "p", "response": "r"}\n')}, headers=key
    )
    again = client.post(
        "/v1/datasets", files={"file": ("a.jsonl", b'{"prompt": "p", "response": "r"}\n')}, headers=key
    )
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    changed = client.post(
        "/v1/datasets", files={"file": ("a.jsonl", b'{"prompt": "q", "response": "r"}\n')}, headers=key
    )
    assert changed.status_code == 409
    assert count(client, Dataset) == 1


# ------------------------------------------------------------------ quotas
def test_queued_quota_is_429_with_retry_after(queued_runtime, settings) -> None:  # noqa: ANN001
    from lethe.cli.wiring import build_app

    rt, _ = queued_runtime
    rt.settings = settings.model_copy(update={"tenant_max_queued": 2, "quota_retry_after_s": 7})
    with TestClient(build_app(runtime=rt), headers=AUTH) as c:
        ds = upload(c).json()["reference"]
        assert [c.post("/v1/jobs", json=job_spec(ds)).status_code for _ in range(2)] == [201, 201]
        r = c.post("/v1/jobs", json=job_spec(ds))
        assert r.status_code == 429 and r.headers["retry-after"] == "7"
        assert "LETHE_TENANT_MAX_QUEUED" in r.json()["detail"]
        _, other = auth.create_key(rt.sessions, "other", "submit,read")
        theirs = {"Authorization": f"Bearer {other}"}
        ds_b = c.post(
            "/v1/datasets", files={"file": ("a.jsonl", b'{"prompt": "p", "response": "r"}\n')}, headers=theirs
        ).json()["reference"]
        assert c.post("/v1/jobs", json=job_spec(ds_b), headers=theirs).status_code == 201  # per tenant


def test_running_quota_defers_the_claim(queued_runtime, settings, fake_engine) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    rt.settings = settings.model_copy(update={"tenant_max_running": 1})
    a, b = new_job(rt), new_job(rt)
    assert claim_job(rt, a.id).attempt == 1  # type: ignore[union-attr]
    assert claim_job(rt, b.id) is Outcome.DEFERRED
    with transaction(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == a.id).values(status="succeeded"))
    assert claim_job(rt, b.id).attempt == 1  # type: ignore[union-attr]


def new_job(rt: Any, name: str = "t") -> Job:
    from lethe.service.storage.datasets import DatasetMeta, upload_dataset

    with open(Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_forget.jsonl", "rb") as f:
        ds = upload_dataset(rt, f, "f.jsonl", DatasetMeta(name="f"), tenant="default")
    return jobs.create_job(rt, parse_spec(job_spec(f"dataset:{ds.id}", name=name)), tenant="default")


# ------------------------------------------------------------------ heartbeats and the reconciler
def age(rt: Any, job_id: uuid.UUID, **values: Any) -> None:
    long_ago = utcnow() - timedelta(seconds=rt.settings.job_lease_s + 5)
    with transaction(rt.sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago, **values))


def test_a_job_whose_worker_vanished_is_requeued_then_failed_after_n_tries(queued_runtime) -> None:  # noqa: ANN001
    rt, dispatcher = queued_runtime
    job = new_job(rt)
    for attempt in range(1, rt.settings.max_attempts + 1):
        assert claim_job(rt, job.id).attempt == attempt  # type: ignore[union-attr]
        age(rt, job.id)  # ... and its worker dies
        dispatcher.sent.clear()
        expected = "queued" if attempt < rt.settings.max_attempts else "failed"
        assert check_heartbeats(rt) == {job.id: expected}
        assert [j for j, _ in dispatcher.sent] == ([job.id] if expected == "queued" else [])
    with rt.sessions() as session:
        row = session.get(Job, job.id)
        assert row.status == "failed" and "stopped responding 3 times" in row.error
    assert check_heartbeats(rt) == {}


def test_a_vanished_job_with_a_cancel_request_is_cancelled(queued_runtime) -> None:  # noqa: ANN001
    rt, _ = queued_runtime
    job = new_job(rt)
    claim_job(rt, job.id)
    jobs.cancel_job(rt, job.id, tenant="default")
    age(rt, job.id)
    assert check_heartbeats(rt) == {job.id: "cancelled"}


def test_the_reconciler_redispatches_what_the_broker_lost(queued_runtime) -> None:  # noqa: ANN001
    rt, dispatcher = queued_runtime
    kept, lost = new_job(rt), new_job(rt)
    dispatcher.sent = [(kept.id, "cpu")]  # the broker lost `lost`'s message
    reconciler = Reconciler(rt)
    assert reconciler.run_once() == []  # once missing: only a suspect (it may be in flight)
    assert reconciler.run_once() == [lost.id]
    assert (lost.id, "cpu") in dispatcher.sent and reconciler.run_once() == []
    Maintenance(rt).run_once()  # all steps together do not fail


# ------------------------------------------------------------------ storage and database failures
def test_a_failed_storage_write_leaves_no_row(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = client.app.state.runtime.storage

    def broken(*_: Any) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(storage, "put_file", broken)
    r = upload(client, data=b'{"prompt": "unique", "response": "r"}\n')
    assert r.status_code == 503 and "retry" in r.json()["detail"]
    assert count(client, Dataset) == 0
    monkeypatch.undo()
    ds = upload(client).json()["reference"]
    monkeypatch.setattr(storage, "put_file", broken)
    job = wait_for(client, client.post("/v1/jobs", json=job_spec(ds)).json()["id"])
    assert job["status"] == "failed" and "disk full" in job["error"]
    monkeypatch.undo()
    with client.app.state.runtime.sessions() as session:
        for row in session.scalars(select(Artifact)):
            assert storage.exists(row.storage_key)  # no row points to a missing object


def test_database_outage_is_503_and_a_retry_succeeds(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: Any, **__: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(jobs, "list_jobs", down)
    r = client.get("/v1/jobs")
    assert r.status_code == 503 and r.json()["detail"] == "database unavailable, retry later"
    monkeypatch.undo()
    assert client.get("/v1/jobs").status_code == 200


def test_finishing_retries_while_the_database_is_down(queued_runtime, monkeypatch) -> None:  # noqa: ANN001
    from lethe.service.jobs import execution

    rt, _ = queued_runtime
    monkeypatch.setattr("time.sleep", lambda _s: None)
    claim = claim_job(rt, new_job(rt).id)
    calls = {"n": 0}
    real = execution.transaction

    def flaky(sessions: Any) -> Any:
        calls["n"] += 1
        if calls["n"] < 3:
            raise OperationalError("UPDATE", {}, Exception("connection refused"))
        return real(sessions)

    monkeypatch.setattr(execution, "transaction", flaky)
    execution.finish(rt, claim, "succeeded", rows=[])  # type: ignore[arg-type]
    with rt.sessions() as session:
        assert session.get(Job, claim.job_id).status == "succeeded"  # type: ignore[union-attr]


# ------------------------------------------------------------------ cancel in every stage
def test_cancel_between_stages_and_after_the_last(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = upload(client).json()["reference"]

    def engine(spec: Any, out_dir: Path, hooks: Any = None) -> Any:
        time.sleep(0.3)  # the cancel request arrives and the heartbeat (0.05 s) sees it
        if spec.name == "between":
            hooks.on_stage("eval_after")  # the next stage starts: the run stops here
        return fake_run_job(spec.model_copy(update={"name": "t"}), out_dir, None)  # runs to the end

    monkeypatch.setattr("lethe.core.run.pipeline.run_job", engine)
    for name in ("between", "after"):
        job_id = client.post("/v1/jobs", json=job_spec(ds, name=name)).json()["id"]
        wait_for(client, job_id, ("running",))
        client.post(f"/v1/jobs/{job_id}/cancel")
        job = wait_for(client, job_id)
        assert job["status"] == "cancelled", (name, job)
        names = {a["name"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()}
        assert "adapter.tar.gz" not in names
        assert "cancel_requested" in [e["kind"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert count(client, JobEvent) > 0


def test_the_service_checkpoints_stages_whose_spec_sets_no_interval() -> None:
    # without checkpoints, a job whose worker died starts again from step 0
    from lethe.core.spec.fields import TrainConfig
    from lethe.core.training.engine import with_default_checkpoints

    assert with_default_checkpoints(TrainConfig(steps=4), 25).checkpoint_every == 25
    assert with_default_checkpoints(TrainConfig(steps=4), 0).checkpoint_every == 0
    own = TrainConfig(steps=4, checkpoint_every=0)
    assert with_default_checkpoints(own, 25).checkpoint_every == 0  # the spec's choice


def test_a_resumed_job_does_not_depend_on_the_workers_checkpoint_setting(tmp_path) -> None:
    """The interval is the deployment's, not the spec's: a job resumed by a worker with another
    LETHE_CHECKPOINT_EVERY reuses its run folder (it used to fail: the interval was written into
    the saved spec, compared byte for byte)."""
    from toy_data import tiny_spec_data

    from lethe.core.run.pipeline import run_job
    from lethe.core.spec.job import parse_spec
    from lethe.core.training.engine import RunHooks

    data = tiny_spec_data()
    data["finetune"]["train"]["steps"] = 2
    spec = parse_spec(data)
    run_job(spec, tmp_path / "run", RunHooks(checkpoint_every=3))
    assert (tmp_path / "run" / "checkpoints" / "unlearn" / "step-0000003").is_dir()
    saved = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())
    assert saved["unlearn"]["train"]["checkpoint_every"] == 0  # the spec as given
    resumed = run_job(spec, tmp_path / "run", RunHooks(checkpoint_every=5))
    assert resumed.metrics["training"]["steps"] == 6


# ------------------------------------------------------------------ fencing the run folder
def test_a_stale_attempt_writes_nothing_to_the_run_folder(queued_runtime, tmp_path) -> None:  # noqa: ANN001
    """Two attempts on one run folder: the first stands still past its lease (SIGSTOP) at step 3
    while a second worker takes the job over; woken, the first must not append its next step to
    `train_log.jsonl` (it used to: a duplicate step) nor write a checkpoint. The second attempt
    resumes from the checkpoint and the log holds every step once."""
    import json

    from toy_data import tiny_spec_data

    from lethe.core.run.pipeline import run_job
    from lethe.core.training.engine import Progress
    from lethe.service.jobs.claim import Heartbeat, LeaseLost
    from lethe.service.jobs.progress import Reporter

    rt, _ = queued_runtime
    job = new_job(rt)
    first = claim_job(rt, job.id)
    assert isinstance(first, Claim)
    data = tiny_spec_data()
    for part in ("finetune", "eval"):  # only the unlearning stage matters here
        data.pop(part)
    data["unlearn"]["train"].update(steps=6, checkpoint_every=2)
    spec, out = parse_spec(data), tmp_path / "run"
    beat = Heartbeat(rt, first)  # its thread is not started: the test decides when it beats
    hooks = Reporter(rt, first, beat).hooks()
    report, taken = hooks.on_progress, list[Claim]()

    def stand_still(p: Progress) -> None:
        if report is not None:
            report(p)
        if p.stage == "unlearn" and p.unit == "step" and p.step == 3 and not taken:
            age(rt, job.id)  # the lease ran out while this process was stopped ...
            second = claim_job(rt, job.id)  # ... and another worker took the job over
            assert isinstance(second, Claim) and second.attempt == 2
            taken.append(second)
            beat.renewed_at -= rt.settings.job_lease_s  # SIGCONT: its clock moved on

    hooks.on_progress = stand_still
    with pytest.raises(LeaseLost):
        run_job(spec, out, hooks)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "unlearn"] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints" / "unlearn").iterdir()) == ["step-0000002"]
    second_beat = Heartbeat(rt, taken[0])
    summary = run_job(spec, out, Reporter(rt, taken[0], second_beat).hooks())
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "unlearn"] == [1, 2, 3, 4, 5, 6]
    assert summary.metrics["training"]["steps"] == 6


def test_a_stale_upload_that_passed_its_fence_cannot_replace_the_new_attempts_artifact(
    queued_runtime: tuple[Any, Any], tmp_path: Path
) -> None:
    """The fence checks the claim before a write, not with it: a worker stopped between the two
    lands its upload after another attempt has stored its own. Keys per attempt keep the new
    attempt's object, and the row the finishing attempt writes, intact."""
    from lethe.service.jobs.execution import finish, store_files
    from lethe.service.storage import artifacts

    rt, _ = queued_runtime
    job = new_job(rt)
    first = claim_job(rt, job.id)
    age(rt, job.id)
    second = claim_job(rt, job.id)
    assert isinstance(first, Claim) and isinstance(second, Claim) and second.attempt == 2
    ours, stale = tmp_path / "ours" / "metrics.json", tmp_path / "stale" / "metrics.json"
    for path, text in ((ours, '{"attempt": 2}'), (stale, '{"attempt": 1}')):
        path.parent.mkdir()
        path.write_text(text)
    rows = store_files(rt, second, [artifacts.pack(ours, "metrics.json", "application/json")], lambda: None)
    store_files(rt, first, [artifacts.pack(stale, "metrics.json", "application/json")], lambda: None)
    finish(rt, second, "succeeded", rows=rows)
    with rt.sessions() as session:
        row = session.scalars(select(Artifact).where(Artifact.job_id == job.id)).one()
    with rt.storage.open(row.storage_key) as stored:
        assert stored.read() == b'{"attempt": 2}'
    assert artifacts.file_sha256(ours) == row.sha256


# ------------------------------------------------------------------ graceful drains
def test_a_drained_attempt_does_not_count_toward_max_attempts(
    queued_runtime: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker shutting down (SIGTERM) stops its job at a checkpoint and queues it again: a long
    job that sees more restarts than LETHE_MAX_ATTEMPTS must not be failed for them (it was: the
    drain's claim counted as a vanished worker). A worker that vanishes still counts."""
    from lethe.core.training.engine import Paused
    from lethe.service.jobs.execution import execute_job

    def draining(spec: Any, out_dir: Path, hooks: Any = None) -> Any:
        assert hooks.should_pause()  # the worker's drain flag reaches the engine
        raise Paused("paused after step 1 of stage unlearn")

    monkeypatch.setattr("lethe.core.run.pipeline.run_job", draining)
    rt, _ = queued_runtime
    job, drain, limit = new_job(rt), threading.Event(), rt.settings.max_attempts
    drain.set()
    for _ in range(limit + 1):  # one more restart than the limit allows crashes
        assert execute_job(rt, job.id, drain) is Outcome.REQUEUED
    for crash in range(1, limit + 1):  # then its workers keep vanishing
        claim = claim_job(rt, job.id)
        assert not isinstance(claim, Outcome), (crash, claim)
        age(rt, job.id)
        assert check_heartbeats(rt) == {job.id: "queued" if crash < limit else "failed"}
    with rt.sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.attempts == 2 * limit + 1
        assert f"stopped responding {limit} times" in (row.error or "")


def test_a_failed_rank_queues_the_job_again_until_its_attempts_run_out(
    queued_runtime: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process of a multi-device job that dies (a GPU fault, the kernel's OOM killer) is an
    infrastructure failure like a vanished worker: the job is queued again to resume from its
    checkpoint, and each such attempt counts toward LETHE_MAX_ATTEMPTS, after which it fails
    with the rank's own message (it used to fail at the first)."""
    from lethe.core.training.distributed import RankFailed
    from lethe.service.jobs.execution import execute_job

    def rank_dies(spec: Any, out_dir: Path, hooks: Any = None) -> Any:
        raise RankFailed("rank 1 of 2 ended (signal 9; see rank-1.log)")

    monkeypatch.setattr("lethe.core.run.pipeline.run_job", rank_dies)
    rt, _ = queued_runtime
    job, limit = new_job(rt), rt.settings.max_attempts
    assert [execute_job(rt, job.id) for _ in range(limit)] == [Outcome.REQUEUED] * (limit - 1) + [
        Outcome.DONE
    ]
    with rt.sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "failed" and row.attempts == limit
        assert "rank 1 of 2 ended (signal 9" in (row.error or "")
        reasons = session.scalars(
            select(JobEvent.payload).where(JobEvent.job_id == job.id, JobEvent.kind == "status")
        ).all()
    queued = [p for p in reasons if p.get("status") == "queued" and "attempt" in p]
    assert len(queued) == limit - 1 and not any(p["drained"] for p in queued)
    assert "a process of the job failed (rank 1 of 2" in queued[0]["reason"]
