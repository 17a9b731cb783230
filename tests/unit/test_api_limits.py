"""Errors at submission instead of later, per-job limits with per-tenant overrides, the time budget
of a running job, and fair share across tenants in the embedded mode (issue 14)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, fast_settings, job_spec, upload, wait_for

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate
from lethe.service.infra.db import Job, JobEvent, transaction, utcnow
from lethe.service.infra.limits import OverBudget, RunBudget, running_time_s
from lethe.service.infra.runtime import Runtime, build_runtime
from lethe.service.infra.settings import Settings
from lethe.service.trust import auth

pytest_plugins = ["service_fixtures"]
MakeApi = Callable[..., TestClient]


@pytest.fixture
def make_api(tmp_path: Path, fake_engine: None) -> Iterator[MakeApi]:
    """The embedded API (fake engine) with some settings changed."""
    clients: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        settings = fast_settings(tmp_path / f"d{len(clients)}", **changes)
        migrate.upgrade(settings)
        client = TestClient(build_app(settings), headers=AUTH)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def problems(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {p["field"]: p["msg"] for p in response.json()["detail"]}


def tenant_client(api: TestClient, tenant: str) -> TestClient:
    _, key = auth.create_key(api.app.state.runtime.sessions, tenant, "read,submit")
    return TestClient(api.app, headers={"Authorization": f"Bearer {key}"})


# ------------------------------------------------------------------ what no worker could run
def test_cuda_is_refused_when_no_worker_has_a_gpu(make_api: MakeApi) -> None:
    api = make_api(worker_devices=["cpu"])
    ds = upload(api).json()["reference"]
    r = api.post("/v1/jobs", json=job_spec(ds, model={"name": "tiny-llama", "device": "cuda"}))
    msg = problems(r)["model.device"]
    assert "no GPU workers" in msg and "use 'cpu' or 'auto'" in msg
    assert api.get("/v1/jobs").json()["items"] == []  # nothing queued
    for device in ("cpu", "auto"):
        spec = job_spec(ds, model={"name": "tiny-llama", "device": device})
        assert api.post("/v1/jobs", json=spec).status_code == 201


def test_cuda_is_accepted_where_gpu_workers_are_declared(make_api: MakeApi) -> None:
    api = make_api(gpu_workers=True)  # the compose file's GPU worker
    ds = upload(api).json()["reference"]
    r = api.post("/v1/jobs", json=job_spec(ds, model={"name": "tiny-llama", "device": "cuda"}))
    assert r.status_code == 201, r.text


def test_hub_model_and_dataset_are_refused_without_hub_access(make_api: MakeApi) -> None:
    api = make_api(hub_access=False, allowed_models=["lethe-test/*"])
    ds = upload(api).json()["reference"]
    r = api.post("/v1/jobs", json=job_spec(ds, model={"name": "lethe-test/no-such-model", "device": "cpu"}))
    msg = problems(r)["model.name"]
    assert "cannot reach" in msg and "LETHE_HUB_ACCESS" in msg and "tiny-llama" in msg
    r = api.post("/v1/jobs", json=job_spec("hf:lethe-test/no-such-set"))
    msg = problems(r)["unlearn.forget.source"]
    assert "cannot reach" in msg and "POST /v1/datasets" in msg
    assert api.get("/v1/jobs").json()["items"] == []


def test_registering_a_hub_dataset_is_refused_without_hub_access(make_api: MakeApi) -> None:
    api = make_api(hub_access=False)
    r = api.post("/v1/datasets/register", json={"source": "hf:lethe-test/no-such-set", "schema": "prompts"})
    msg = problems(r)["source"]
    assert "cannot reach" in msg and "POST /v1/datasets" in msg and "LETHE_HUB_ACCESS" in msg
    assert api.get("/v1/datasets").json()["items"] == []  # nothing registered


def test_a_registered_hub_dataset_is_refused_once_the_hub_is_out_of_reach(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered while the hub was reachable; the server then lost hub access: a job naming it by
    `dataset:<id>` is refused at submission, as `hf:` in the spec is, not failed by the worker."""
    api = make_api(hub_access=True)
    r = api.post("/v1/datasets/register", json={"source": "hf:lethe-test/no-such-set", "schema": "prompts"})
    assert r.status_code == 201, r.text
    ref = r.json()["reference"]
    monkeypatch.setattr(api.app.state.runtime.settings, "hub_access", False)
    msg = problems(api.post("/v1/jobs", json=job_spec(ref)))["unlearn.forget.source"]
    assert ref in msg and "hf:lethe-test/no-such-set" in msg and "cannot reach" in msg
    assert "POST /v1/datasets" in msg
    assert api.get("/v1/jobs").json()["items"] == []


def test_a_cached_hub_dataset_needs_no_hub(
    make_api: MakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In the local cache, where the worker's offline loader finds it: registered and used."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "datasets--lethe-test--cached").mkdir(parents=True)
    api = make_api(hub_access=False)
    r = api.post("/v1/datasets/register", json={"source": "hf:lethe-test/cached", "schema": "prompts"})
    assert r.status_code == 201, r.text
    assert api.post("/v1/jobs", json=job_spec(r.json()["reference"])).status_code == 201
    assert api.post("/v1/jobs", json=job_spec("hf:lethe-test/cached")).status_code == 201


def test_hub_references_pass_with_hub_access(make_api: MakeApi) -> None:
    api = make_api(hub_access=True, allowed_models=["lethe-test/*"])
    spec = job_spec("hf:lethe-test/set", model={"name": "lethe-test/model", "device": "cpu"})
    assert api.post("/v1/jobs", json=spec).status_code == 201


# ------------------------------------------------------------------ per-job limits
def test_tokens_per_example_are_capped(make_api: MakeApi) -> None:
    api = make_api(max_example_tokens=512)
    ds = upload(api).json()["reference"]
    spec = job_spec(ds, format={"max_length": 1024}, eval={"generation": {"max_new_tokens": 600}})
    found = problems(api.post("/v1/jobs", json=spec))
    assert "over this deployment's limit of 512 (LETHE_MAX_EXAMPLE_TOKENS)" in found["format.max_length"]
    assert "LETHE_MAX_EXAMPLE_TOKENS" in found["eval.generation.max_new_tokens"]
    ok = job_spec(ds, format={"max_length": 512})
    assert api.post("/v1/jobs", json=ok).status_code == 201


def test_estimated_run_time_is_capped(make_api: MakeApi) -> None:
    api = make_api(max_job_estimated_s=60, token_cost_s=0.001)
    ds = upload(api).json()["reference"]
    big = job_spec(ds)  # 5,000 steps x 8 examples x 256 tokens: about 10,000 s at 1 ms a token
    big["unlearn"]["train"] = {"steps": 5000, "batch_size": 8}
    msg = problems(api.post("/v1/jobs", json=big))["unlearn.train"]
    assert "estimated run time" in msg and "LETHE_MAX_JOB_ESTIMATED_S" in msg and "60" in msg
    assert api.post("/v1/jobs", json=job_spec(ds)).status_code == 201  # 3 steps: seconds


def steps_spec(ref: str, steps: int, name: str = "t") -> dict[str, Any]:
    return job_spec(
        ref, name=name, unlearn={"method": "ga", "forget": {"source": ref}, "train": {"steps": steps}}
    )


def test_limits_are_overridden_per_tenant(make_api: MakeApi) -> None:
    api = make_api(
        max_job_steps=50, tenant_limits={"big": {"max_job_steps": 500}, "small": {"max_job_steps": 5}}
    )
    big, small = tenant_client(api, "big"), tenant_client(api, "small")
    assert big.post("/v1/jobs", json=steps_spec(upload(big).json()["reference"], 400)).status_code == 201
    r = small.post("/v1/jobs", json=steps_spec(upload(small).json()["reference"], 6))
    assert (
        "6 is over this deployment's limit of 5 (LETHE_MAX_JOB_STEPS)" in problems(r)["unlearn.train.steps"]
    )
    r = api.post("/v1/jobs", json=steps_spec(upload(api).json()["reference"], 51))  # no override
    assert "limit of 50" in problems(r)["unlearn.train.steps"]


def test_a_job_past_its_time_budget_fails_with_the_reason(make_api: MakeApi) -> None:
    api = make_api(job_time_budget_s=0.3)
    ds = upload(api).json()["reference"]
    slow = steps_spec(ds, 200, "slow")  # the fake engine: 0.05 s a step, so 10 s without a budget
    job = wait_for(api, api.post("/v1/jobs", json=slow).json()["id"], timeout=8)
    assert job["status"] == "failed", job
    assert "time budget of 0.3 s" in job["error"] and "LETHE_JOB_TIME_BUDGET_S" in job["error"]
    assert job["progress"]["step"] < 200  # stopped early, not run to its end


def test_the_time_budget_is_overridden_per_tenant(make_api: MakeApi) -> None:
    api = make_api(job_time_budget_s=0.3, tenant_limits={"patient": {"job_time_budget_s": 0}})
    patient = tenant_client(api, "patient")
    ds = upload(patient).json()["reference"]
    slow = steps_spec(ds, 12, "slow")  # 0.6 s: over the default budget; this tenant has none
    job = wait_for(patient, patient.post("/v1/jobs", json=slow).json()["id"], timeout=8)
    assert job["status"] == "succeeded", job


def job_with_history(rt: Runtime, *events: tuple[float, str, dict[str, Any]]) -> uuid.UUID:
    """A running job whose events (seconds before now, kind, payload) are its history so far."""
    now = utcnow()
    with transaction(rt.sessions) as session:
        job = Job(tenant="default", name="t", status="running", spec={}, queue="cpu", attempts=2)
        job.started_at = now - timedelta(seconds=events[-1][0])  # this attempt's start
        session.add(job)
        session.flush()
        for ago, kind, payload in events:
            session.add(JobEvent(job_id=job.id, kind=kind, payload=payload, ts=now - timedelta(seconds=ago)))
    return job.id


def test_the_time_budget_counts_earlier_attempts(settings: Settings) -> None:
    """A job taken over after its worker died goes on with what its first attempt left: 70 s of
    a 60 s budget were spent by then, so the second attempt stops at once (it used to get a fresh
    budget from its own start). The lease the dead worker's job waited out does not count."""
    rt = build_runtime(settings)
    job_id = job_with_history(
        rt,
        (500, "status", {"status": "queued"}),
        (400, "status", {"status": "running", "attempt": 1}),
        (330, "progress", {"step": 70}),  # its last sign of work: the worker died then
        (200, "status", {"status": "queued", "reason": "its worker stopped sending heartbeats"}),
        (1, "status", {"status": "running", "attempt": 2}),
    )
    with rt.sessions() as session:
        assert running_time_s(session, job_id, utcnow()) == pytest.approx(71, abs=0.5)
    settings.job_time_budget_s = 60
    with pytest.raises(OverBudget, match="time budget of 60 s"):
        RunBudget.of_job(rt, job_id).check()
    settings.job_time_budget_s = 80  # 9 s left
    RunBudget.of_job(rt, job_id).check()
    rt.close()


def test_the_queue_wait_after_a_drain_does_not_count(settings: Settings) -> None:
    """Drained at a checkpoint after 20 s, queued for 275 s, running again for 5 s: 25 s used."""
    rt = build_runtime(settings)
    job_id = job_with_history(
        rt,
        (300, "status", {"status": "running", "attempt": 1}),
        (290, "progress", {"step": 10}),
        (280, "status", {"status": "queued", "attempt": 1, "drained": True}),
        (5, "status", {"status": "running", "attempt": 2}),
    )
    with rt.sessions() as session:
        assert running_time_s(session, job_id, utcnow()) == pytest.approx(25, abs=0.5)
    settings.job_time_budget_s = 30
    RunBudget.of_job(rt, job_id).check()  # not over: the wait in the queue is no running time
    rt.close()


# ------------------------------------------------------------------ fair share (embedded mode)
def started(client: TestClient, job_id: str) -> datetime:
    job = wait_for(client, job_id)
    return datetime.fromisoformat(job["started_at"])


def test_another_tenants_job_starts_before_the_first_tenants_next_ones(make_api: MakeApi) -> None:
    """One worker thread; tenant A queues a long job and three more, then tenant B one: B's job
    starts as soon as A's first job ends, ahead of A's others (FIFO would run it last)."""
    api = make_api(inprocess_workers=1, tenant_max_running=4, quota_retry_after_s=1)
    a, b = tenant_client(api, "tenant-a"), tenant_client(api, "tenant-b")
    ref_a, ref_b = upload(a).json()["reference"], upload(b).json()["reference"]
    first = a.post("/v1/jobs", json=steps_spec(ref_a, 20, "slow")).json()["id"]  # about 1 s
    wait_for(a, first, ("running",))
    others = [a.post("/v1/jobs", json=steps_spec(ref_a, 2, "slow")).json()["id"] for _ in range(3)]
    mine = b.post("/v1/jobs", json=steps_spec(ref_b, 2, "slow")).json()["id"]
    b_start, first_end = started(b, mine), wait_for(a, first)["finished_at"]
    assert all(started(a, job) > b_start for job in others), "tenant A's queued jobs went first"
    # within one job slot: B waited for A's running job only
    assert (b_start - datetime.fromisoformat(first_end)).total_seconds() < 1.0
    print(f"EVIDENCE fairness (embedded, 1 worker): B started {b_start.isoformat()} after A's first "
          f"ended {first_end}, before A's 3 queued jobs")  # fmt: skip
