"""Polling GET /v1/jobs/{id}: API keys looked up once per `auth_cache_s`, ETag / If-None-Match."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import job_spec, upload

from lethe.api.deps import KeyCache
from lethe.service.trust import auth

pytest_plugins = ["service_fixtures"]


def counting_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = auth.authenticate

    def counted(session: Any, key: str) -> Any:
        calls.append(key)
        return real(session, key)

    monkeypatch.setattr("lethe.api.deps.authenticate", counted)
    return calls


def test_a_polled_key_is_looked_up_once_per_ttl(
    queued_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queued_client.post("/v1/jobs", json=job_spec(upload(queued_client).json()["reference"])).json()[
        "id"
    ]
    calls = counting_lookups(monkeypatch)
    queued_client.app.state.key_cache = KeyCache(60.0)
    for _ in range(20):
        assert queued_client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert len(calls) == 1
    queued_client.app.state.key_cache = KeyCache(0.05)  # after the TTL the key is looked up again
    for _ in range(2):
        time.sleep(0.1)
        assert queued_client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert len(calls) == 3


def test_unknown_keys_are_never_cached(queued_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_lookups(monkeypatch)
    rt = queued_client.app.state.runtime
    for _ in range(3):
        assert queued_client.get("/v1/jobs", headers={"Authorization": "Bearer lethe_a_b"}).status_code == 401
    assert len(calls) == 3
    _, key = auth.create_key(rt.sessions, "fresh", "read")  # a new key works at once
    assert queued_client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_etag_answers_304_until_the_job_changes(queued_client: TestClient) -> None:
    job_id = queued_client.post("/v1/jobs", json=job_spec(upload(queued_client).json()["reference"])).json()[
        "id"
    ]
    first = queued_client.get(f"/v1/jobs/{job_id}")
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"') and first.json()["status"] == "queued"
    same = queued_client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    weak = queued_client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    queued_client.post(f"/v1/jobs/{job_id}/cancel")
    changed = queued_client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
    assert changed.headers["etag"] != etag


def test_a_submission_carries_the_etag_of_the_job(queued_client: TestClient) -> None:
    """POST /v1/jobs answers with the ETag GET gives the same job (and a replay too), so a client
    polls with If-None-Match from its first GET."""
    spec = job_spec(upload(queued_client).json()["reference"])
    keyed = {"Idempotency-Key": "etag-1"}
    created = queued_client.post("/v1/jobs", json=spec, headers=keyed)
    assert created.status_code == 201 and created.headers["location"] == f"/v1/jobs/{created.json()['id']}"
    etag = created.headers["etag"]
    polled = queued_client.get(created.headers["location"], headers={"If-None-Match": etag})
    assert polled.status_code == 304 and polled.headers["etag"] == etag
    replayed = queued_client.post("/v1/jobs", json=spec, headers=keyed)
    assert replayed.headers["idempotent-replayed"] == "true" and replayed.headers["etag"] == etag
    assert replayed.json() == created.json()
