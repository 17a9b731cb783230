"""A tiny-model job over HTTP, on PostgreSQL + Redis + a Celery worker process and on the
embedded defaults: it succeeds with a reloadable adapter, it can be cancelled while it runs, and
the database holds its metrics and events."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

Stack = Any  # tests/integration/conftest.py:Stack (conftest modules are not imported by name)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FINAL = ("succeeded", "failed", "cancelled")


def upload(client: httpx.Client, name: str) -> str:
    with open(EXAMPLES / "data" / name, "rb") as f:
        r = client.post("/v1/datasets", files={"file": (name, f)}, data={"schema": "pairs"})
    assert r.status_code == 201, r.text
    return r.json()["reference"]


def tiny_spec(client: httpx.Client, steps: int) -> dict[str, Any]:
    """examples/tiny.yaml over uploaded datasets, with a smaller evaluation."""
    forget, normal = upload(client, "tiny_forget.jsonl"), upload(client, "tiny_normal.jsonl")
    spec = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    spec["unlearn"]["forget"]["source"] = spec["eval"]["harmful_prompts"]["source"] = forget
    spec["finetune"]["data"]["source"] = forget
    for ref in (spec["unlearn"]["normal"], spec["eval"]["benign_prompts"], spec["eval"]["normal"]):
        ref["source"] = normal
    spec["unlearn"]["train"]["steps"] = steps
    spec["eval"].update(max_examples=2, generation={"max_new_tokens": 4})
    return spec


def sse_statuses(client: httpx.Client, job_id: str) -> list[str]:
    """Follow the job's server-sent events to its end; return the status changes in order."""
    statuses = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", params={"stream": "true"}, timeout=240) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["kind"] == "status":
                    statuses.append(event["payload"]["status"])
    return statuses


def reload_adapter(archive: bytes, folder: Path) -> None:
    """Extract the archive and load it with peft on the tiny base model, as a user would."""
    import peft
    import torch

    from lethe.core.models.loading import load_model
    from lethe.core.spec.fields import ModelSpec
    from lethe.service.storage.artifacts import safe_extract

    (folder / "adapter.tar.gz").write_bytes(archive)
    safe_extract(folder / "adapter.tar.gz", folder)
    base, tokenizer = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    ids = tokenizer("### Question: hello", return_tensors="pt")
    before = base(**ids).logits
    model = peft.PeftModel.from_pretrained(base, folder / "adapter")
    trained = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained and any(bool(p.abs().sum() > 0) for p in trained)
    assert not torch.allclose(model(**ids).logits, before)


def database_rows(stack: Stack, job_id: str) -> tuple[Any, list[Any], list[Any]]:
    from lethe.service.infra.db import Artifact, Job, JobEvent

    engine = create_engine(stack.database_url)
    try:
        with Session(engine) as session:
            import uuid

            key = uuid.UUID(job_id)
            job = session.get(Job, key)
            # in the order they were written: without ORDER BY, PostgreSQL may return any order
            of_job = select(JobEvent).where(JobEvent.job_id == key).order_by(JobEvent.id)
            events = list(session.scalars(of_job))
            artifacts = list(session.scalars(select(Artifact).where(Artifact.job_id == key)))
            return job, events, artifacts
    finally:
        engine.dispose()


def test_job_succeeds_and_its_adapter_reloads(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as client:
        r = client.post("/v1/jobs", json=tiny_spec(client, steps=4))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert r.json()["status"] == "queued"
        assert sse_statuses(client, job_id) == ["queued", "running", "succeeded"], _logs(stack)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job["error"]
        assert set(job["metrics"]["before"]) >= {"forget_nll", "normal_ppl"}
        # the last stage to report progress is the evaluation after unlearning, run to its end
        assert job["progress"]["stage"] == "eval_after"
        assert job["progress"]["step"] == job["progress"]["total"] > 0
        download = client.get(f"/v1/jobs/{job_id}/artifacts/adapter.tar.gz")
    assert download.status_code == 200
    assert download.headers["x-content-sha256"] == hashlib.sha256(download.content).hexdigest()
    assert int(download.headers["content-length"]) == len(download.content)
    reload_adapter(download.content, tmp_path)

    row, events, artifacts = database_rows(stack, job_id)
    assert row.status == "succeeded" and row.metrics == job["metrics"]
    kinds = {e.kind for e in events}
    assert {"status", "stage", "progress"} <= kinds
    unlearn = [e.payload for e in events if e.kind == "progress" and e.payload["stage"] == "unlearn"]
    assert unlearn[-1]["step"] == unlearn[-1]["total"] == 4 and unlearn[-1]["unit"] == "step"
    stored = {a.name: a.sha256 for a in artifacts}
    assert stored["adapter.tar.gz"] == download.headers["x-content-sha256"]
    assert {"metrics.json", "run.log", "train_log.jsonl"} <= set(stored)


def test_cancelling_a_running_job(stack: Stack) -> None:
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=tiny_spec(client, steps=200)).json()["id"]
        training = lambda j: j["stage"] == "unlearn" and (j["progress"] or {}).get("step", 0) >= 1  # noqa: E731
        job = wait(client, job_id, training, stack)
        assert job["status"] == "running"
        asked = time.monotonic()
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        job = wait(client, job_id, lambda j: j["status"] in FINAL, stack)
        took = time.monotonic() - asked
    assert job["status"] == "cancelled" and took < 10, (job, took)
    assert job["progress"]["step"] < 200
    row, events, _ = database_rows(stack, job_id)
    assert row.status == "cancelled" and row.cancel_requested
    assert [e.payload.get("status") for e in events if e.kind == "status"][-1] == "cancelled"
    assert "cancel_requested" in {e.kind for e in events}


def wait(client: httpx.Client, job_id: str, done: Any, stack: Stack, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        if job["status"] in FINAL:
            raise AssertionError(f"job ended early: {job}\n{_logs(stack)}")
        time.sleep(0.1)
    raise AssertionError(f"timed out: {job}\n{_logs(stack)}")


def _logs(stack: Stack) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in stack.logs)


def test_readiness_names_each_dependency(stack: Stack) -> None:
    checks = httpx.get(f"{stack.url}/readyz").json()["checks"]
    expected = {"database", "storage", "broker" if stack.env["LETHE_BROKER_URL"] else "worker"}
    assert set(checks) == expected and set(checks.values()) == {"ok"}


def test_metrics_count_jobs_from_the_database(stack: Stack) -> None:
    text = httpx.get(f"{stack.url}/metrics").text
    assert "lethe_jobs{state=" in text and "lethe_http_request_duration_seconds_bucket" in text
