"""Fault injection, part two: leases, held messages and shutdown, with real processes (a stack of
its own: see faultstack.py). No job is stuck and none runs twice:

- a worker SIGSTOPped past its lease and woken after another took its job over writes nothing;
- a queued job whose retry a SIGKILLed worker held (unacknowledged) is dispatched again;
- a running job whose worker was SIGKILLed before Redis was saved and killed runs after Redis
  comes back with that data;
- SIGTERM ends `lethe serve` at once although an event stream is open;
- SIGTERM to a worker's process group stops its job at a checkpoint; it resumes at the next step;
- a job waiting for its tenant's running slot starts as soon as the slot frees.

    pytest tests/integration/test_faults_lease.py -s     # prints the EVIDENCE lines
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from faultstack import FaultStack, first_steps_after_takeover, wait_until
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from test_faults import events, forget_set, job, spec, steps_done, wait_final

pytest_plugins = ["faultstack"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
QUOTA_ONE = {"LETHE_TENANT_MAX_RUNNING": "1"}  # one running job per tenant: the next one waits


def wait_steps(stack: FaultStack, client: httpx.Client, job_id: str, n: int) -> None:
    """Until the job's train log has `n` rows; fails at once if the job ended instead."""

    def trained() -> bool:
        if steps_done(stack, job_id) >= n:
            return True
        state = job(client, job_id)
        assert state["status"] not in ("succeeded", "failed", "cancelled"), (state, stack.logs())
        return False

    wait_until(trained, 90, f"step {n} of job {job_id}", stack.logs())


def received(stack: FaultStack, proc: subprocess.Popen) -> int:
    """Tasks this worker has received so far (Celery logs each one)."""
    return stack.worker_log(proc).count("] received")


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def long_spec(forget: str, steps: int, name: str, every: int = 2) -> dict[str, Any]:
    body = spec(forget, steps, name)
    body["unlearn"]["train"]["checkpoint_every"] = every
    return body


def running_on(stack: FaultStack, before: dict[int, int]) -> subprocess.Popen:
    """The worker that received a task since `before` (its counts then)."""
    found = [w for w in stack.workers if received(stack, w) > before.get(w.pid, 0)]
    assert len(found) == 1, (found, stack.logs())
    return found[0]


def statuses(stack: FaultStack, job_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in events(stack, job_id) if e.kind == "status"]


def runs(stack: FaultStack, job_id: str) -> int:
    return sum(1 for p in statuses(stack, job_id) if p["status"] == "running")


def train_steps(client: httpx.Client, job_id: str) -> list[int]:
    r = client.get(f"/v1/jobs/{job_id}/artifacts/train_log.jsonl")
    assert r.status_code == 200, r.text
    rows = [json.loads(line) for line in r.text.splitlines() if line]
    return [row["step"] for row in rows if row["stage"] == "unlearn"]


def test_a_worker_woken_after_losing_its_job_writes_nothing(fault_stack: FaultStack) -> None:
    stack = fault_stack
    while len(stack.workers) < 2:
        stack.start_worker()
    with stack.client() as client:
        forget = forget_set(client)
        before = {w.pid: received(stack, w) for w in stack.workers}
        job_id = submit(client, long_spec(forget, 300, "stopped"))
        wait_steps(stack, client, job_id, 5)
        sleeper = running_on(stack, before)
        stack.signal_worker(sleeper, signal.SIGSTOP)
        stopped_at = steps_done(stack, job_id)
        taken = lambda: job(client, job_id)["attempts"] == 2 and steps_done(stack, job_id) > stopped_at + 3  # noqa: E731
        wait_until(taken, 60, "the other worker to take the job over", stack.logs())
        stack.signal_worker(sleeper, signal.SIGCONT)
        final = wait_final(stack, client, job_id)
        assert final["status"] == "succeeded", final["error"]
        steps = train_steps(client, job_id)
    assert steps == list(range(1, 301)), Counter(steps).most_common(3)  # each step once
    print(
        f"EVIDENCE faults: worker SIGSTOPped at step {stopped_at}, job taken over (attempt 2), "
        f"SIGCONT after step {stopped_at + 3}: 300 train log rows, no step twice"
    )


def test_a_retry_held_by_a_killed_worker_is_dispatched_again(fault_stack: FaultStack) -> None:
    """Tenant at its running quota: the waiting job's retry (a message with an ETA, delivered and
    unacknowledged) sits with a worker that is SIGKILLed. The reconciler must not count it as held
    for ever: it is dispatched again within its ETA plus a lease."""
    stack = fault_stack
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    holder_env = {**QUOTA_ONE, "LETHE_QUOTA_RETRY_AFTER_S": "2"}
    busy = stack.start_worker(QUOTA_ONE)
    with stack.client() as client:
        forget = forget_set(client)
        # long enough to hold the slot until the reconciler acts (300 steps took 16 s: the
        # slot freed and the waiting job started by the other path); cancelled once it has
        first = submit(client, long_spec(forget, 5000, "slot", every=0))
        wait_steps(stack, client, first, 2)
        holder = stack.start_worker(holder_env)
        second = submit(client, spec(forget, 4, "waits"))
        wait_until(lambda: received(stack, holder) >= 2, 30, "the retry to reach the worker", stack.logs())
        stack.kill_worker(holder)  # its retry stays in Redis's unacked hash
        killed = time.monotonic()
        again = lambda: any(e.kind == "dispatched" for e in events(stack, second))  # noqa: E731
        wait_until(again, 30, "the reconciler to dispatch the held job again", stack.logs())
        took = time.monotonic() - killed
        assert job(client, first)["status"] == "running"  # the slot is still taken: no other path
        client.post(f"/v1/jobs/{first}/cancel")  # frees the slot: the dispatched job runs
        stack.cancelled.add(first)
        finals = [wait_final(stack, client, j, 180) for j in (first, second)]
    assert [f["status"] for f in finals] == ["cancelled", "succeeded"], [f["error"] for f in finals]
    assert runs(stack, second) == 1 and busy in stack.workers
    print(f"EVIDENCE faults: a retry held by a SIGKILLed worker was dispatched again after {took:.1f} s")


def test_a_requeued_job_runs_after_redis_comes_back_with_its_data(fault_stack: FaultStack) -> None:
    """Worker SIGKILLed mid-job, Redis saved and killed before the job is requeued, Redis back with
    the dead worker's unacknowledged message: the requeued job must run (it stayed queued)."""
    stack = fault_stack
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    worker = stack.start_worker()
    with stack.client() as client:
        forget = forget_set(client)
        job_id = submit(client, long_spec(forget, 40, "persisted"))
        wait_steps(stack, client, job_id, 3)
        stack.kill_worker(worker)
        stack.save_and_kill_redis()
        requeued = lambda: job(client, job_id)["status"] == "queued"  # noqa: E731
        wait_until(requeued, 30, "the heartbeat check to requeue the job", stack.logs())
        stack.start_redis(keep_data=True)
        stack.start_worker()
        final = wait_final(stack, client, job_id, 120)
    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == 2 and runs(stack, job_id) == 2
    starts = first_steps_after_takeover(events(stack, job_id))
    assert len(starts) == 1 and starts[0] >= 3 and starts[0] % 2 == 1, starts  # a checkpoint + 1
    print(
        "EVIDENCE faults: worker SIGKILLed, Redis saved, killed and restarted with its data: "
        f"the job ran, resumed at step {starts[0]}"
    )


def test_sigterm_ends_the_api_at_once_with_an_event_stream_open(fault_stack: FaultStack) -> None:
    stack = fault_stack
    assert stack.api is not None and stack.workers
    with stack.client() as client:
        job_id = submit(client, long_spec(forget_set(client), 5000, "streamed", every=0))
        seen: list[str] = []
        reader = threading.Thread(target=follow, args=(stack, job_id, seen), daemon=True)
        reader.start()
        wait_until(lambda: any("running" in line for line in seen), 60, "the stream", stack.logs())
        os_began = time.monotonic()
        stack.api.send_signal(signal.SIGTERM)
        try:
            stack.api.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"lethe serve still runs 10 s after SIGTERM\n{stack.logs()}") from None
        took = time.monotonic() - os_began
        reader.join(timeout=5)
        assert not reader.is_alive()
        stack.start_api()
        client.post(f"/v1/jobs/{job_id}/cancel")
        stack.cancelled.add(job_id)
        assert wait_final(stack, client, job_id)["status"] == "cancelled"
    print(f"EVIDENCE faults: SIGTERM ended lethe serve in {took:.1f} s with an event stream open")


def follow(stack: FaultStack, job_id: str, seen: list[str]) -> None:
    with stack.client() as client, client.stream("GET", f"/v1/jobs/{job_id}/events/stream") as r:
        try:
            for line in r.iter_lines():
                seen.append(line)
        except httpx.HTTPError:
            seen.append("cut")


def test_sigterm_to_a_workers_group_drains_its_job_to_a_checkpoint(fault_stack: FaultStack) -> None:
    stack = fault_stack
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    worker = stack.start_worker()
    with stack.client() as client:
        job_id = submit(client, long_spec(forget_set(client), 120, "drained", every=50))
        wait_steps(stack, client, job_id, 8)
        stack.signal_worker(worker, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not drain in 30 s\n{stack.logs()}") from None
        stack.workers.remove(worker)
        drained = [p for p in statuses(stack, job_id) if p["status"] == "queued" and p.get("drained")]
        assert drained, (statuses(stack, job_id), stack.logs())
        at = steps_done(stack, job_id)  # the checkpoint taken at the last step it finished
        stack.start_worker(QUOTA_ONE)
        final = wait_final(stack, client, job_id, 120)
    assert final["status"] == "succeeded", final["error"]
    starts = first_steps_after_takeover(events(stack, job_id))
    assert starts == [at + 1], (starts, at)  # not 1: the periodic checkpoints are 50 steps apart
    print(f"EVIDENCE faults: SIGTERM to the worker's group at step {at}: drained, resumed at {at + 1}")


def test_a_job_waiting_for_its_tenants_slot_starts_when_it_frees(fault_stack: FaultStack) -> None:
    """Tenant quota 1 and a retry 30 s away: the waiting job must start when the slot frees."""
    stack = fault_stack
    env = {**QUOTA_ONE, "LETHE_QUOTA_RETRY_AFTER_S": "30"}
    for worker in list(stack.workers):
        stack.kill_worker(worker)
    stack.start_worker(env)
    stack.start_worker(env)
    with stack.client() as client:
        forget = forget_set(client)
        first = submit(client, spec(forget, 30, "holds"))
        wait_until(lambda: job(client, first)["status"] == "running", 60, "the first job", stack.logs())
        second = submit(client, spec(forget, 4, "next"))
        deferred = lambda: sum(received(stack, w) for w in stack.workers) >= 3  # noqa: E731
        wait_until(deferred, 30, "the second job to be deferred", stack.logs())
        assert job(client, second)["status"] == "queued"
        wait_final(stack, client, first)
        freed = time.monotonic()
        wait_until(lambda: job(client, second)["status"] != "queued", 20, "the next job", stack.logs())
        took = time.monotonic() - freed
        assert wait_final(stack, client, second)["status"] == "succeeded"
    assert took < 5, took  # not the 30 s retry
    print(f"EVIDENCE faults: a job waiting for its tenant's slot started {took:.1f} s after it freed")


def test_nothing_was_lost_or_run_twice(fault_stack: FaultStack) -> None:
    from lethe.service.infra.db import Job

    engine = create_engine(fault_stack.database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(select(Job.id, Job.status)).all()
    finally:
        engine.dispose()
    states = Counter(status for _, status in rows)
    unexpected = [
        str(i)
        for i, s in rows
        if s != "succeeded" and not (s == "cancelled" and str(i) in fault_stack.cancelled)
    ]
    assert not unexpected, (states, unexpected)
    print(f"EVIDENCE faults: injected {dict(fault_stack.faults)}; jobs {dict(states)}; jobs lost 0")
