"""The OpenAPI document says what the server does, in a form client generators read: operation
ids as method names, one error body, a file upload as binary, one type per JSON answer, typed
certificate, readiness and download answers; and the server keeps to it (enums, date-times,
examples, 405 with `Allow`, no undocumented 400). `test_api_fuzz.py` checks the same with
schemathesis; the generated clients are in tests/integration/test_generated_clients.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import job_spec, upload, wait_for

from lethe.api.schemas import CertificateFile, ReadyOut

pytest_plugins = ["service_fixtures"]  # client (embedded API, fake engine), settings, ...
OPERATION_ID = re.compile(r"^[a-z_]+\.[a-z_]+$")


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def operations(schema: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    }


@pytest.fixture
def succeeded(client: TestClient) -> dict[str, Any]:
    job = client.post("/v1/jobs", json=job_spec(upload(client).json()["reference"])).json()
    return wait_for(client, job["id"])


def test_operation_ids_read_as_tag_and_method(schema: dict[str, Any]) -> None:
    ops = operations(schema)
    assert len(ops) == sum(len(v) for v in schema["paths"].values())  # unique
    assert all(OPERATION_ID.match(op_id) for op_id in ops), sorted(ops)
    assert all(op_id.split(".")[0] == op["tags"][0] for op_id, (_, _, op) in ops.items())
    assert {
        "jobs.submit",
        "jobs.list",
        "jobs.get",
        "jobs.cancel",
        "jobs.events",
        "jobs.stream_events",
    } <= set(ops)
    assert {"datasets.upload", "datasets.register", "certificates.get", "audit.export"} <= set(ops)


def test_every_error_answer_is_the_error_body_the_server_sends(schema: dict[str, Any]) -> None:
    assert not {"HTTPValidationError", "ValidationError"} & set(schema["components"]["schemas"])
    for op_id, (_, _, op) in operations(schema).items():
        for status, answer in op["responses"].items():
            if status.startswith("4") or (status == "503" and op_id != "health.ready"):
                assert answer["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
                }, (op_id, status)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in op["responses"], op_id


def test_each_answer_has_one_type_and_files_come_as_bytes_first(schema: dict[str, Any]) -> None:
    files = {"jobs.download_artifact", "audit.export"}
    for op_id, (_, _, op) in operations(schema).items():
        for status, answer in op["responses"].items():
            kinds = list(answer.get("content", {}))
            if op_id in files and status == "200":
                assert kinds[0] == "application/octet-stream" and len(kinds) > 1, (op_id, kinds)
                assert answer["content"][kinds[0]]["schema"] == {"type": "string", "format": "binary"}
            else:
                assert len(kinds) <= 1, (op_id, status, kinds)
    body = schema["components"]["schemas"]["DatasetsUploadForm"]
    assert body["properties"]["file"]["format"] == "binary"
    assert body["properties"]["format"]["enum"] == ["auto", "jsonl", "csv", "parquet", "text"]
    ops = operations(schema)
    assert "text/event-stream" in ops["jobs.stream_events"][2]["responses"]["200"]["content"]
    for op_id, model in (("certificates.get", "CertificateFile"), ("health.ready", "ReadyOut")):
        answer = ops[op_id][2]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"] == {"$ref": f"#/components/schemas/{model}"}, op_id
    status = next(p for p in ops["jobs.list"][2]["parameters"] if p["name"] == "status")
    assert status["schema"]["anyOf"][0]["enum"] == ["queued", "running", "succeeded", "failed", "cancelled"]


def test_the_schemas_examples_are_accepted(
    client: TestClient, schema: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the example `hf:org/name` needs hub access (refused without it: test_api_limits)
    monkeypatch.setattr(client.app.state.runtime.settings, "hub_access", True)
    components = schema["components"]["schemas"]
    source = components["RegisterDataset"]["properties"]["source"]["examples"][0]
    assert client.post("/v1/datasets/register", json={"source": source}).status_code == 201
    url = components["WebhookConfigIn"]["properties"]["url"]["examples"][0]
    assert client.put("/v1/webhook", json={"url": url}).status_code == 200


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    for method, path, allowed in (
        ("OPTIONS", "/v1/keys", "GET, POST"),
        ("PATCH", "/v1/webhook", "GET, PUT"),
        ("GET", "/v1/datasets/register", "POST"),  # not an id: ids are UUIDs
        ("PUT", "/v1/datasets/00000000-0000-0000-0000-000000000000", "DELETE, GET"),
    ):
        r = client.request(method, path)
        assert (r.status_code, r.headers.get("allow")) == (405, allowed), (method, path, r.text)
    assert client.get("/v1/jobs/not-a-uuid").status_code == 404


def test_query_values_outside_the_schema_are_refused(client: TestClient) -> None:
    assert client.get("/v1/jobs", params={"status": "done"}).status_code == 422
    assert client.get("/v1/jobs", params={"status": "queued"}).status_code == 200
    for value in ("0.5", "1700000000", "2025-11-01T09:30:00", "2025-02-30", "yesterday"):
        r = client.get("/v1/audit", params={"until": value})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "query.until", (value, r.text)
    for value in (
        "2025-11-01",
        "2025-11-01T09:30:00Z",
        "2025-11-01t09:30:00.5+02:00",
        "2016-12-31T23:59:60Z",
    ):
        assert client.get("/v1/audit", params={"since": value}).status_code == 200, value


def test_a_body_that_cannot_be_parsed_is_a_422_not_a_400(client: TestClient) -> None:
    r = client.post(
        "/v1/datasets",
        content=b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nno closing boundary',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] in ("body", "file")


def test_events_stream_at_its_own_path_and_the_old_query_still_works(
    client: TestClient, succeeded: dict[str, Any]
) -> None:
    url = f"/v1/jobs/{succeeded['id']}/events"
    listed = client.get(url).json()
    for path, params in ((f"{url}/stream", {}), (url, {"stream": "true"})):
        with client.stream("GET", path, params=params) as r:
            assert r.headers["content-type"].startswith("text/event-stream"), path
            data = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
        assert [e["id"] for e in data] == [e["id"] for e in listed], path
    with client.stream("GET", f"{url}/stream", headers={"Last-Event-ID": str(listed[1]["id"])}) as r:
        resumed = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert [e["id"] for e in resumed] == [e["id"] for e in listed[2:]]


def test_audit_export_at_its_own_path_and_the_old_query_still_works(client: TestClient) -> None:
    upload(client)
    export = client.get("/v1/audit/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert export.content == client.get("/v1/audit", params={"format": "jsonl"}).content
    assert [json.loads(line)["action"] for line in export.text.splitlines()][-1] == "POST /v1/datasets"
    raw = client.get("/v1/audit/export", headers={"Accept": "application/octet-stream"})
    assert raw.headers["content-type"] == "application/octet-stream" and raw.content == export.content


def test_downloads_certificate_and_readiness_match_their_schemas(
    client: TestClient, succeeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"/v1/jobs/{succeeded['id']}/artifacts/metrics.json"
    assert client.get(url).headers["content-type"].startswith("application/json")
    raw = client.get(url, headers={"Accept": "application/octet-stream, */*"})
    assert raw.headers["content-type"] == "application/octet-stream"
    reply = client.get(f"/v1/jobs/{succeeded['id']}/certificate")
    assert reply.status_code == 200, reply.text
    document = CertificateFile.model_validate_json(reply.content)
    assert str(document.certificate.job.id) == succeeded["id"]
    ReadyOut.model_validate(client.get("/readyz").json())
