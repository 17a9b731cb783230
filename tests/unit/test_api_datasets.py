"""/v1/datasets on the embedded defaults: upload, list, get, delete, and bad uploads."""

from __future__ import annotations

import hashlib
import io
import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, EXAMPLES, fast_settings, job_spec, upload

pytest_plugins = ["service_fixtures"]  # the service fixtures: client, settings, ...


def test_upload_returns_id_sha256_rows_and_schema(client: TestClient) -> None:
    raw = (EXAMPLES / "tiny_forget.jsonl").read_bytes()
    r = upload(client, schema="pairs")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["sha256"] == hashlib.sha256(raw).hexdigest()
    assert body["row_count"] == len(raw.splitlines())
    assert (body["schema"], body["format"], body["kind"]) == ("pairs", "jsonl", "upload")
    assert body["reference"] == f"dataset:{body['id']}"
    assert client.get(f"/v1/datasets/{body['id']}").json() == body


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_upload_csv_and_parquet_with_column_mapping(client: TestClient, fmt: str) -> None:
    frame = pd.DataFrame({"question": ["q1", "q2", "q3"], "answer": ["a1", "a2", "a3"]})
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False) if fmt == "csv" else frame.to_parquet(buffer)
    r = upload(
        client,
        f"rows.{fmt}",
        buffer.getvalue(),
        columns=json.dumps({"prompt": "question", "response": "answer"}),
    )
    assert r.status_code == 201, r.text
    assert (r.json()["row_count"], r.json()["format"]) == (3, fmt)


def test_upload_text_as_book(client: TestClient) -> None:
    r = upload(client, "book_forget.txt", (EXAMPLES / "book_forget.txt").read_bytes(), schema="book")
    assert r.status_code == 201, r.text
    assert r.json()["row_count"] > 0


@pytest.mark.parametrize(
    "name, data, fields, status, words",
    [
        ("empty.jsonl", b"", {}, 422, "empty"),
        ("rows.jsonl", b'{"prompt": "p"}\n', {}, 422, "response"),
        ("rows.jsonl", b"not json\n", {}, 422, "rows.jsonl"),
        ("rows.jsonl", b'{"prompt": "p", "response": "r"}\n', {"schema": "poem"}, 422, "schema"),
        ("rows.jsonl", b'{"prompt": "p", "response": "r"}\n', {"columns": "{oops"}, 422, "columns"),
        ("rows.dat", b"a,b\n", {}, 422, "format"),
        ("rows.csv", b"\xff\xfe\x00bad", {}, 422, "UTF-8"),
    ],
)
def test_bad_uploads_say_what_to_fix(
    client: TestClient, name: str, data: bytes, fields: dict, status: int, words: str
) -> None:
    r = upload(client, name, data, **fields)
    assert r.status_code == status, r.text
    assert words in json.dumps(r.json()["detail"])
    assert "/tmp" not in r.text and ".lethe" not in r.text  # no server paths leak
    assert client.get("/v1/datasets").json()["items"] == []  # nothing was stored


def test_upload_over_the_limit_is_413(tmp_path, fake_engine) -> None:
    from lethe.cli.wiring import build_app
    from lethe.service.infra import migrate

    s = fast_settings(tmp_path / "d", max_upload_mb=1)
    migrate.upgrade(s)
    with TestClient(build_app(s), headers=AUTH) as c:
        r = upload(c, "big.jsonl", b'{"prompt": "p", "response": "r"}\n' * 80_000)
        assert r.status_code == 413
        assert "MiB" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while the body streams in
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
            for _ in range(40):
                yield b"x" * 65_536

        r = c.post(
            "/v1/datasets", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
        assert r.status_code == 413, r.text
    assert not list((s.data_dir / "storage").glob("datasets/*"))


def test_list_pages_newest_first_and_delete(client: TestClient) -> None:
    ids = [upload(client, name=f"d{i}").json()["id"] for i in range(3)]
    first = client.get("/v1/datasets?limit=2").json()
    assert [d["id"] for d in first["items"]] == ids[::-1][:2]
    rest = client.get(f"/v1/datasets?limit=2&cursor={first['next_cursor']}").json()
    assert [d["id"] for d in rest["items"]] == ids[:1] and rest["next_cursor"] is None
    assert client.delete(f"/v1/datasets/{ids[0]}").status_code == 204
    assert client.get(f"/v1/datasets/{ids[0]}").status_code == 404
    assert client.delete(f"/v1/datasets/{ids[0]}").status_code == 404
    assert client.get("/v1/datasets?cursor=garbage").status_code == 422


def test_same_content_shares_one_object_until_the_last_delete(client: TestClient, settings) -> None:
    a, b = upload(client).json(), upload(client).json()
    blob = settings.storage_root / "datasets" / "default" / a["sha256"]  # per tenant
    assert a["sha256"] == b["sha256"] and blob.is_file()
    client.delete(f"/v1/datasets/{a['id']}")
    assert blob.is_file()  # b still holds it
    client.delete(f"/v1/datasets/{b['id']}")
    assert not blob.exists()


def test_delete_refused_while_a_queued_job_uses_it(queued_client: TestClient) -> None:
    ds = upload(queued_client).json()
    job = queued_client.post("/v1/jobs", json=job_spec(ds["reference"])).json()
    r = queued_client.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and job["id"] in r.json()["detail"]
    queued_client.post(f"/v1/jobs/{job['id']}/cancel")
    assert queued_client.delete(f"/v1/datasets/{ds['id']}").status_code == 204


def test_failed_storage_write_leaves_no_row(client: TestClient, monkeypatch) -> None:
    from lethe.service.infra.object_store import LocalStorage, StorageError

    def broken(self, key, path):  # noqa: ANN001
        raise StorageError("disk full")

    monkeypatch.setattr(LocalStorage, "put_file", broken)
    r = upload(client)
    assert r.status_code == 503 and "disk full" in r.json()["detail"]
    assert client.get("/v1/datasets").json()["items"] == []


def test_register_hub_reference_and_refuse_other_urls(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hub access: without it (and not cached), hf: is refused (test_api_limits)
    monkeypatch.setattr(client.app.state.runtime.settings, "hub_access", True)
    r = client.post("/v1/datasets/register", json={"source": "hf:org/forget-set", "schema": "prompts"})
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["format"], r.json()["row_count"]) == ("hub", "hub", None)
    for source in ("http://169.254.169.254/latest", "file:///etc/passwd", "/etc/passwd"):
        r = client.post("/v1/datasets/register", json={"source": source})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "source"
    r = client.post("/v1/datasets/register", json={"source": "s3://elsewhere/x.jsonl"})
    assert r.status_code == 422 and "not allowed" in r.json()["detail"][0]["msg"]
