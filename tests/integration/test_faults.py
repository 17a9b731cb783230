"""Fault injection with real processes (PostgreSQL, a Redis of our own, Celery workers, the API):
workers SIGKILLed at random training steps, Redis restarted with jobs queued, database connections
terminated under load, the API killed and restarted. Nothing is lost, nothing runs twice at once,
and an interrupted job ends with the same adapter as an uninterrupted one.

    pytest tests/integration/test_faults.py -m integration -s     # prints the EVIDENCE lines
"""

from __future__ import annotations

import io
import random
import tarfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from faultstack import FaultStack, first_steps_after_takeover, wait_until
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

pytest_plugins = ["faultstack"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
FINAL = ("succeeded", "failed", "cancelled")
RNG = random.Random()  # a different kill step each run; printed with the evidence


def spec(forget: str, steps: int, name: str = "fault") -> dict[str, Any]:
    return {
        "name": name,
        "seed": 3,
        "model": {"name": "tiny-llama", "device": "cpu"},
        "lora": {"rank": 4, "alpha": 8},
        "format": {"max_length": 64},
        "unlearn": {
            "method": "ga",
            "forget": {"source": forget},
            "train": {"lr": 0.005, "steps": steps, "batch_size": 2, "checkpoint_every": 2},
        },
    }


def forget_set(client: httpx.Client) -> str:
    with open(EXAMPLES / "tiny_forget.jsonl", "rb") as f:
        r = client.post("/v1/datasets", files={"file": ("tiny_forget.jsonl", f)})
    assert r.status_code == 201, r.text
    return r.json()["reference"]


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    for _ in range(50):  # the API may be restarting or the database reconnecting: retry
        try:
            r = client.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} unreadable")


def wait_final(stack: FaultStack, client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ended() -> bool:
        found.update(job(client, job_id))
        return found["status"] in FINAL

    wait_until(ended, timeout, f"job {job_id} to end", stack.logs())
    return found


def steps_done(stack: FaultStack, job_id: str) -> int:
    log = stack.folder / "work" / job_id / "run" / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def adapter(client: httpx.Client, job_id: str) -> dict[str, Any]:
    from safetensors.torch import load

    r = client.get(f"/v1/jobs/{job_id}/artifacts/adapter.tar.gz")
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        member = tar.extractfile("adapter/adapter_model.safetensors")
        assert member is not None
        return load(member.read())


def events(stack: FaultStack, job_id: str) -> list[Any]:
    from lethe.service.infra.db import JobEvent

    engine = create_engine(stack.database_url)
    try:
        with Session(engine) as session:
            return list(
                session.scalars(
                    select(JobEvent).where(JobEvent.job_id == uuid.UUID(job_id)).order_by(JobEvent.id)
                )
            )
    finally:
        engine.dispose()


def test_killed_workers_resume_from_the_checkpoint_to_the_same_adapter(fault_stack: FaultStack) -> None:
    import torch

    stack = fault_stack
    with stack.client() as client:
        forget = forget_set(client)
        reference = client.post("/v1/jobs", json=spec(forget, 40)).json()["id"]
        assert wait_final(stack, client, reference)["status"] == "succeeded"
        victim = client.post("/v1/jobs", json=spec(forget, 40)).json()["id"]
        kills: list[int] = []
        for child_only in (False, True):  # the whole worker, then only the process running the job
            low = steps_done(stack, victim) + 3
            step = RNG.randint(low, max(low, 8 + 12 * len(kills)))
            wait_until(lambda s=step: steps_done(stack, victim) >= s, 90, f"step {step}", stack.logs())
            kills.append(steps_done(stack, victim))
            stack.kill_worker(stack.workers[-1], child_only=child_only)
            if not child_only:
                stack.start_worker()
        final = wait_final(stack, client, victim)
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] >= 3
        theirs, ours = adapter(client, reference), adapter(client, victim)
    progress = [e.payload for e in events(stack, victim) if e.kind == "progress"]
    trained = [p for p in progress if p["stage"] == "unlearn"]
    assert trained[-1]["step"] == 40  # the job's last progress is its evaluation's, after training
    assert theirs.keys() == ours.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)
    starts = first_steps_after_takeover(events(stack, victim))
    assert len(starts) >= 2 and all(s > 1 for s in starts), starts  # resumed, not restarted
    print(
        f"EVIDENCE faults: worker SIGKILLed at step {kills[0]}, pool process at step {kills[1]}; "
        f"resumed at steps {starts}; adapter equal to the uninterrupted run's (atol 1e-6)"
    )


def test_queued_jobs_survive_a_redis_restart_and_run_once(fault_stack: FaultStack) -> None:
    stack = fault_stack
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    with stack.client() as client:
        forget = forget_set(client)
        ids = [client.post("/v1/jobs", json=spec(forget, 4, f"q{i}")).json()["id"] for i in range(4)]
        time.sleep(2.0)  # four reconciler passes: jobs the broker holds are left alone
        assert not any(e.kind == "dispatched" for j in ids for e in events(stack, j))
        stack.restart_redis()  # every queued message is gone
        redispatched = lambda: all(any(e.kind == "dispatched" for e in events(stack, j)) for j in ids)  # noqa: E731
        wait_until(redispatched, 30, "the reconciler to dispatch the jobs again", stack.logs())
        stack.start_worker()
        stack.start_worker()  # two workers: a doubled message would run a job twice at once
        finals = [wait_final(stack, client, j) for j in ids]
    assert [f["status"] for f in finals] == ["succeeded"] * len(ids), [f["error"] for f in finals]
    for job_id in ids:
        runs = [e for e in events(stack, job_id) if e.kind == "status" and e.payload["status"] == "running"]
        assert len(runs) == 1, (job_id, [e.payload for e in runs])  # claimed once: never run twice
    print(
        f"EVIDENCE faults: Redis restarted with {len(ids)} jobs queued; {len(ids)} dispatched again, "
        "each ran exactly once"
    )


def terminate_connections(database_url: str) -> int:
    """pg_terminate_backend on every other connection to the database; how many were killed."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": url.database},
                ).all()
            )
    finally:
        admin.dispose()


def test_database_drops_and_an_api_restart_lose_nothing(fault_stack: FaultStack) -> None:
    stack = fault_stack
    if not stack.workers:
        stack.start_worker()
    statuses: Counter[int | str] = Counter()
    stop = threading.Event()
    with stack.client() as client:
        forget = forget_set(client)
        job_id = client.post("/v1/jobs", json=spec(forget, 60, "db")).json()["id"]
        poller = threading.Thread(target=poll, args=(stack, job_id, statuses, stop), daemon=True)
        poller.start()
        wait_until(lambda: steps_done(stack, job_id) >= 5, 90, "training", stack.logs())
        killed = 0
        for _ in range(3):
            killed += terminate_connections(stack.database_url)
            stack.count("database connections terminated")
            time.sleep(0.4)
        key = {"Idempotency-Key": f"restart-{uuid.uuid4()}"}
        first = client.post("/v1/jobs", json=spec(forget, 4, "idem"), headers=key).json()["id"]
        stack.kill_api()
        stack.start_api()
        again = client.post("/v1/jobs", json=spec(forget, 4, "idem"), headers=key)
        assert again.status_code == 201 and again.json()["id"] == first  # the retry returns the first job
        final = wait_final(stack, client, job_id)
        assert wait_final(stack, client, first)["status"] == "succeeded"
        stop.set()
        poller.join()
    assert final["status"] == "succeeded", final["error"]
    # clean failures only: 503 while the database reconnects; refused or cut while the API restarts
    assert set(statuses) <= {200, 503, "connection refused", "connection cut"}, statuses
    assert statuses[200] > 0
    print(
        f"EVIDENCE faults: {killed} database connections terminated in 3 rounds and the API "
        f"SIGKILLed during a job; poll answers {dict(statuses)}; the job succeeded"
    )


def poll(stack: FaultStack, job_id: str, statuses: Counter[int | str], stop: threading.Event) -> None:
    """GET the job every 50 ms, counting the answers (a restarting API refuses connections)."""
    with stack.client() as client:
        while not stop.is_set():
            try:
                statuses[client.get(f"/v1/jobs/{job_id}").status_code] += 1
            except httpx.ConnectError:
                statuses["connection refused"] += 1
            except (httpx.RemoteProtocolError, httpx.ReadError):  # the API was killed mid-request
                statuses["connection cut"] += 1
            except httpx.HTTPError as err:
                statuses[type(err).__name__] += 1
            time.sleep(0.05)


def test_nothing_was_lost(fault_stack: FaultStack) -> None:
    """Every job the suite submitted ended, and succeeded; no artifact row lacks its object."""
    from lethe.service.infra.db import Artifact, Job

    engine = create_engine(fault_stack.database_url)
    try:
        with Session(engine) as session:
            states = Counter(session.scalars(select(Job.status)))
            missing = [
                a.storage_key
                for a in session.scalars(select(Artifact))
                if not (fault_stack.folder / "storage" / a.storage_key).is_file()
            ]
    finally:
        engine.dispose()
    assert set(states) == {"succeeded"} and not missing, (states, missing)
    print(
        f"EVIDENCE faults: injected {dict(fault_stack.faults)}; jobs {dict(states)}; jobs lost 0; "
        f"artifact rows without their object {len(missing)}"
    )
