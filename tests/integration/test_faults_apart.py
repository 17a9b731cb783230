"""Fault injection with workers that share no folder, as workers on different machines: only the
database, the broker and the object storage are common. The worker running a job is SIGKILLed
mid-training twice; each time another worker, whose work folder holds nothing of the job, takes
it over from the checkpoint in storage (not from step 0), and the job ends with the same adapter
as an uninterrupted run. Its snapshots are pruned while it runs and deleted when it ends.

    pytest tests/integration/test_faults_apart.py -m integration -s     # prints the EVIDENCE lines
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from faultstack import FaultStack, first_steps_after_takeover, wait_until
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from test_faults import adapter, events, forget_set, spec, wait_final

pytest_plugins = ["faultstack"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
RNG = random.Random()  # a different kill step each run; printed with the evidence
STEPS = 120  # tiny-llama trains about 25 steps a second here: time to see and kill a step


def run_folder(stack: FaultStack, proc: subprocess.Popen, job_id: str) -> Path:
    return stack.work_dirs[proc.pid] / job_id / "run"


def running_on(stack: FaultStack, job_id: str) -> subprocess.Popen | None:
    """The live worker whose own work folder holds the job (only the one running it does)."""
    found = [p for p in stack.workers if (run_folder(stack, p, job_id) / "train_log.jsonl").exists()]
    assert len(found) <= 1, "two workers run the job at once"
    return found[0] if found else None


def steps_on(stack: FaultStack, job_id: str) -> int:
    proc = running_on(stack, job_id)
    if proc is None:
        return 0
    log = run_folder(stack, proc, job_id) / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def snapshots_left(stack: FaultStack, job_id: str) -> list[str]:
    """The job's objects under `resume/` (a local upload in flight is a dot file: not one yet)."""
    folder = stack.folder / "storage" / "jobs" / job_id / "resume"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def restored_lines(stack: FaultStack, job_id: str) -> list[str]:
    """The workers' log lines saying they restored the job's run folder from storage."""
    lines = []
    for log in stack.worker_logs.values():
        text = log.read_text(errors="replace")
        lines += [line for line in text.splitlines() if f"job {job_id}: run folder restored" in line]
    return lines


def kill_the_runner(stack: FaultStack, job_id: str, at_least: int) -> int:
    """SIGKILL the whole worker running the job once it trained `at_least` steps, start a fresh
    one (another machine: an empty work folder), and return the steps it had done."""
    wait_until(lambda: steps_on(stack, job_id) >= at_least, 120, f"step {at_least}", stack.logs())
    victim = running_on(stack, job_id)
    assert victim is not None
    done = steps_on(stack, job_id)
    # pruned while it runs: the pointer and the newest snapshot (one more between upload and prune)
    assert 2 <= len(snapshots_left(stack, job_id)) <= 3, snapshots_left(stack, job_id)
    stack.kill_worker(victim)
    stack.start_worker()
    return done


def test_workers_without_a_shared_folder_resume_from_storage(fault_stack_apart: FaultStack) -> None:
    import torch

    stack = fault_stack_apart
    with stack.client() as client:
        forget = forget_set(client)
        reference = client.post("/v1/jobs", json=spec(forget, STEPS, "apart-ref")).json()["id"]
        assert wait_final(stack, client, reference)["status"] == "succeeded"
        job_id = client.post("/v1/jobs", json=spec(forget, STEPS, "apart")).json()["id"]
        kills = [kill_the_runner(stack, job_id, RNG.randint(6, 30))]
        kills.append(kill_the_runner(stack, job_id, RNG.randint(kills[0] + 10, kills[0] + 40)))
        final = wait_final(stack, client, job_id, timeout=180)
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] >= 3
        theirs, ours = adapter(client, reference), adapter(client, job_id)
    assert theirs.keys() == ours.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)
    starts = first_steps_after_takeover(events(stack, job_id))
    # each takeover began after the last checkpoint (every 2 steps) before its kill, not at step 1
    assert len(starts) == 2 and all(s > 1 for s in starts), starts
    assert [k - s < 3 for k, s in zip(kills, starts, strict=True)] == [True, True], (kills, starts)
    assert len(restored_lines(stack, job_id)) == 2, restored_lines(stack, job_id)
    assert snapshots_left(stack, job_id) == [] and snapshots_left(stack, reference) == []
    print(
        f"EVIDENCE faults apart: workers with separate work folders; the worker running the job "
        f"SIGKILLed at step {kills[0]}, then its successor at step {kills[1]}; resumed from the "
        f"snapshot in storage at steps {starts} on workers whose folder held nothing of the job; "
        "adapter equal to the uninterrupted run's (atol 1e-6); snapshots left after the end 0"
    )


def test_nothing_was_lost_apart(fault_stack_apart: FaultStack) -> None:
    """Every job of this stack ended and succeeded."""
    from lethe.service.infra.db import Job

    engine = create_engine(fault_stack_apart.database_url)
    try:
        with Session(engine) as session:
            states = Counter(session.scalars(select(Job.status)))
            attempts = {str(j.id): j.attempts for j in session.scalars(select(Job))}
    finally:
        engine.dispose()
    assert set(states) == {"succeeded"} and sum(states.values()) == 2, states
    print(
        f"EVIDENCE faults apart: injected {dict(fault_stack_apart.faults)}; jobs {dict(states)}; "
        f"jobs lost 0; attempts per job {sorted(attempts.values())}"
    )
