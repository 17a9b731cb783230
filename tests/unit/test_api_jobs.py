"""/v1/jobs on the embedded defaults with a fake engine: validation, lifecycle, events, artifacts."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, fast_settings, job_spec, upload, wait_for

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate

pytest_plugins = ["service_fixtures"]  # the service fixtures: client, settings, ...


@pytest.fixture
def forget(client: TestClient) -> str:
    return upload(client).json()["reference"]


def fields(response) -> dict[str, str]:  # noqa: ANN001
    assert response.status_code == 422, response.text
    return {p["field"]: p["msg"] for p in response.json()["detail"]}


def test_job_runs_to_success_with_progress_metrics_and_artifacts(client: TestClient, forget: str) -> None:
    r = client.post("/v1/jobs", json=job_spec(forget))
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_for(client, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == {
        "stage": "unlearn",
        "step": 3,
        "total": 3,
        "losses": {"loss": 1 / 3},
        "eta_s": 0.0,
        "elapsed_s": 0.03,
    }
    assert job["metrics"] == {"before": {"forget_nll": 1.0}, "after": {"forget_nll": 3.0}}
    assert job["stage"] == "unlearn" and job["attempts"] == 1 and job["finished_at"]
    kinds = [e["kind"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()]
    assert kinds[:3] == ["status", "status", "stage"] and kinds[-1] == "status"
    assert kinds.count("progress") == 3
    names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert names == {
        "adapter.tar.gz",
        "metrics.json",
        "train_log.jsonl",
        "run.log",
        "spec.yaml",
        "report.html",
    }


def test_artifact_download_is_streamed_with_length_and_sha256(client: TestClient, forget: str) -> None:
    job = wait_for(client, client.post("/v1/jobs", json=job_spec(forget)).json()["id"])
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/adapter.tar.gz")
    assert r.status_code == 200
    assert r.headers["x-content-sha256"] == hashlib.sha256(r.content).hexdigest()
    assert int(r.headers["content-length"]) == len(r.content)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert sorted(tar.getnames()) == [
            "adapter",
            "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors",
        ]
    assert client.get(f"/v1/jobs/{job['id']}/artifacts/nope").status_code == 404


def test_failed_job_keeps_the_engines_message_and_its_log(client: TestClient, forget: str) -> None:
    job = wait_for(client, client.post("/v1/jobs", json=job_spec(forget, name="fail")).json()["id"])
    assert job["status"] == "failed"
    assert job["error"] == "row 3 of forget.jsonl has no 'response': map it with columns"
    assert "run.log" in {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}


def test_cancel_a_running_job_stops_it_at_the_next_step(client: TestClient, forget: str) -> None:
    spec = job_spec(forget, name="slow")
    spec["unlearn"]["train"]["steps"] = 2000
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    wait_for(client, job_id, ("running",))
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"]
    job = wait_for(client, job_id, timeout=5)
    assert job["status"] == "cancelled" and job["progress"]["step"] < 2000
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_cancel_a_queued_job_at_once(queued_client: TestClient) -> None:
    ds = upload(queued_client).json()["reference"]
    job_id = queued_client.post("/v1/jobs", json=job_spec(ds)).json()["id"]
    r = queued_client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"]


@pytest.mark.parametrize(
    "change, field, words",
    [
        (lambda s: s["unlearn"]["train"].update(lr=-1), "unlearn.ga.train.lr", "greater than 0"),
        (lambda s: s["unlearn"].update(method="magic"), "unlearn", "magic"),
        (lambda s: s["model"].update(name="no such model"), "model.name", "not allowed"),
        (lambda s: s.update(colour="red"), "colour", "Extra inputs"),
        (lambda s: s["unlearn"]["train"].pop("steps"), "unlearn.ga.train", "steps or train.epochs"),
    ],
)
def test_bad_specs_get_422_with_field_paths(
    client: TestClient, forget: str, change, field: str, words: str
) -> None:  # noqa: ANN001
    spec = job_spec(forget)
    change(spec)
    problems = fields(client.post("/v1/jobs", json=spec))
    assert field in problems and words in problems[field], problems


def test_dataset_references_are_checked_before_queueing(client: TestClient, forget: str) -> None:
    missing = f"dataset:{uuid.uuid4()}"
    spec = job_spec(
        forget,
        eval={
            "harmful_prompts": {"source": missing, "schema": "prompts"},
            "normal": {"source": "/etc/passwd"},
            "benign_prompts": {"source": "s3://other/x.jsonl"},
        },
    )
    problems = fields(client.post("/v1/jobs", json=spec))
    assert "no dataset" in problems["eval.harmful_prompts.source"]
    assert "cannot be read by the service" in problems["eval.normal.source"]
    assert "not allowed" in problems["eval.benign_prompts.source"]
    assert fields(client.post("/v1/jobs", json=job_spec("dataset:xyz")))["unlearn.forget.source"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


@pytest.fixture
def capped(tmp_path: Path, fake_engine: None) -> Iterator[TestClient]:
    """The API with small job caps: 50 steps per training stage, 5 examples per dataset."""
    settings = fast_settings(tmp_path / "capped", max_job_steps=50, max_job_examples=5)
    migrate.upgrade(settings)
    with TestClient(build_app(settings), headers=AUTH) as c:
        yield c


def test_a_job_over_the_size_caps_gets_422_naming_the_field_and_the_limit(capped: TestClient) -> None:
    forget = upload(capped).json()["reference"]  # 8 examples

    def spec(train: dict[str, Any], limit: int | None = 5, **extra: Any) -> dict[str, Any]:
        body = job_spec(forget, **extra)
        body["unlearn"].update(train=train, forget={"source": forget, "limit": limit})
        return body

    over = {
        "unlearn.train.steps": spec({"steps": 51}),
        "unlearn.train.epochs": spec({"epochs": 21}),  # 21 x 5 examples / batch 2: 53 steps
        "unlearn.forget.limit": spec({"steps": 3}, limit=None),
        "finetune.train.epochs": spec(
            {"steps": 3}, finetune={"data": {"source": "builtin:normal_qa"}, "train": {"epochs": 1}}
        ),
        "probes.relearn.steps": spec({"steps": 3}, probes={"relearn": {"steps": 51}}),
    }
    for field, body in over.items():
        problems = fields(capped.post("/v1/jobs", json=body))
        assert list(problems) == [field] and "this deployment's limit of" in problems[field], problems
    assert fields(capped.post("/v1/jobs", json=spec({"steps": 51})))["unlearn.train.steps"] == (
        "51 is over this deployment's limit of 50 (LETHE_MAX_JOB_STEPS): ask for fewer steps"
    )
    assert (
        "(LETHE_MAX_JOB_EXAMPLES): set unlearn.forget.limit to at most 5"
        in (fields(capped.post("/v1/jobs", json=over["unlearn.forget.limit"]))["unlearn.forget.limit"])
    )
    assert capped.get("/v1/jobs").json()["items"] == []  # nothing was queued
    for within in (spec({"steps": 50}), spec({"epochs": 20}), spec({"epochs": 20}, limit=None)):
        within["unlearn"]["forget"]["offset"] = 3  # 5 of the 8 examples left
        assert capped.post("/v1/jobs", json=within).status_code == 201, within


def test_list_filters_by_status_and_pages(queued_client: TestClient) -> None:
    ds = upload(queued_client).json()["reference"]
    ids = [queued_client.post("/v1/jobs", json=job_spec(ds)).json()["id"] for _ in range(3)]
    queued_client.post(f"/v1/jobs/{ids[1]}/cancel")
    assert [j["id"] for j in queued_client.get("/v1/jobs?status=queued").json()["items"]] == [ids[2], ids[0]]
    page = queued_client.get("/v1/jobs?limit=2").json()
    rest = queued_client.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}").json()
    assert [j["id"] for j in page["items"] + rest["items"]] == ids[::-1]
    assert "query.status" in fields(queued_client.get("/v1/jobs?status=done"))
    assert queued_client.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 404


def test_jobs_are_routed_by_device(queued_client: TestClient, queued_runtime) -> None:  # noqa: ANN001
    queued_runtime[0].settings.worker_devices = ["cpu", "cuda"]  # a deployment with GPU workers
    ds = upload(queued_client).json()["reference"]
    for device in ("cpu", "cuda", "auto"):
        spec = job_spec(ds, model={"name": "tiny-llama", "device": device})
        queued_client.post("/v1/jobs", json=spec)
    assert [q for _, q in queued_runtime[1].sent] == ["cpu", "gpu", "cpu"]


def test_unreachable_queue_is_503_and_the_job_is_not_left_queued(
    queued_client: TestClient, queued_runtime
) -> None:  # noqa: ANN001
    ds = upload(queued_client).json()["reference"]
    queued_runtime[1].fail = True
    r = queued_client.post("/v1/jobs", json=job_spec(ds))
    assert r.status_code == 503 and "retry" in r.json()["detail"]
    assert queued_client.get("/v1/jobs?status=queued").json()["items"] == []


def test_events_stream_as_server_sent_events_until_the_end(client: TestClient, forget: str) -> None:
    job_id = client.post("/v1/jobs", json=job_spec(forget)).json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert data[-1]["payload"]["status"] == "succeeded"
    later = client.get(f"/v1/jobs/{job_id}/events?after={data[2]['id']}").json()
    assert [e["id"] for e in later] == [e["id"] for e in data[3:]]


def test_openapi_docs_health_and_metrics(client: TestClient, forget: str) -> None:
    wait_for(client, client.post("/v1/jobs", json=job_spec(forget)).json()["id"])
    schema = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/datasets", "/v1/jobs/{job_id}/artifacts/{name}"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["checks"] == {"database": "ok", "storage": "ok", "worker": "ok"}
    text = client.get("/metrics").text
    assert 'lethe_jobs{state="succeeded"} 1.0' in text
    assert 'lethe_queue_depth{queue="cpu"} 0.0' in text
    assert "lethe_train_step_duration_seconds_bucket" in text
    assert 'route="/v1/jobs/{job_id}"' in text


def test_artifacts_that_cannot_be_stored_fail_the_job_without_rows(
    client: TestClient, forget: str, monkeypatch
) -> None:  # noqa: ANN001
    from lethe.service.infra.object_store import LocalStorage, StorageError

    real = LocalStorage.put_file

    def flaky(self, key: str, path) -> None:  # noqa: ANN001
        if key.startswith("jobs/") and key.endswith("adapter.tar.gz"):
            raise StorageError("bucket full")
        real(self, key, path)

    monkeypatch.setattr(LocalStorage, "put_file", flaky)
    job = wait_for(client, client.post("/v1/jobs", json=job_spec(forget)).json()["id"])
    assert job["status"] == "failed" and "bucket full" in job["error"]
    names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert "adapter.tar.gz" not in names
    for name in names:  # every row that exists points to an object that exists
        assert client.get(f"/v1/jobs/{job['id']}/artifacts/{name}").status_code == 200


def test_readiness_fails_when_storage_does(client: TestClient, monkeypatch) -> None:  # noqa: ANN001
    from lethe.service.infra.object_store import LocalStorage, StorageError

    def down(self) -> None:  # noqa: ANN001
        raise StorageError("folder gone")

    monkeypatch.setattr(LocalStorage, "check", down)
    r = client.get("/readyz")
    assert r.status_code == 503 and "storage" in r.json()["detail"] and "folder gone" in r.json()["detail"]
