"""The cross-tenant matrix: every endpoint of the OpenAPI schema, used by tenant B on tenant A's
objects, answers exactly as for an object that never existed (404 with the same message), lists
show none of A's objects, and nothing of A's changes.

The endpoints come from the schema itself, so an endpoint added later is in the matrix too.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import job_spec, upload, wait_for

from lethe.service.trust import auth

pytest_plugins = ["service_fixtures"]
PARAMS = re.compile(r"{(\w+)}")


@pytest.fixture
def world(client: TestClient) -> dict[str, Any]:
    """Tenant A (`default`, the bootstrap key) owns a dataset, a finished job and a key; tenant B
    has an admin key with every scope."""
    rt = client.app.state.runtime
    dataset = upload(client).json()
    job = wait_for(client, client.post("/v1/jobs", json=job_spec(dataset["reference"])).json()["id"])
    running = client.post(
        "/v1/jobs",
        json=job_spec(
            dataset["reference"],
            name="slow",
            unlearn={"method": "ga", "forget": {"source": dataset["reference"]}, "train": {"steps": 400}},
        ),
    ).json()
    a_key, _ = auth.create_key(rt.sessions, "default", "read")
    _, b_key = auth.create_key(rt.sessions, "tenant-b", "admin")
    ids = {"dataset_id": dataset["id"], "job_id": job["id"], "name": "adapter.tar.gz", "key_id": a_key.id}
    return {"ids": ids, "running": running["id"], "b": {"Authorization": f"Bearer {b_key}"}}


def operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path) for path, ops in paths.items() for method in ops if path.startswith("/v1/")
    ]


def fill(path: str, values: dict[str, str]) -> str:
    return PARAMS.sub(lambda m: values.get(m.group(1), str(uuid.uuid4())), path)


def call(client: TestClient, method: str, url: str, headers: dict[str, str]) -> Any:
    body: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, url, headers=headers, **body)


def test_every_endpoint_hides_other_tenants_objects(client: TestClient, world: dict[str, Any]) -> None:
    ids, b = world["ids"], world["b"]
    never = {k: (v if k == "name" else str(uuid.uuid4())) for k, v in ids.items()}
    tried, leaks = 0, []
    cases = [(m, p) for m, p in operations(client) if PARAMS.search(p)]
    cases += [(m, p + "?stream=true") for m, p in cases if p.endswith("/events")]  # SSE as well
    for method, path in cases:
        for job_id in (ids["job_id"], world["running"]):
            theirs = call(client, method, fill(path, {**ids, "job_id": job_id}), b)
            unknown = call(client, method, fill(path, never), b)
            tried += 1
            same = (
                theirs.text.replace(job_id, "X").replace(ids["dataset_id"], "X").replace(ids["key_id"], "X")
            )
            expected = unknown.text
            for k in ("job_id", "dataset_id", "key_id"):
                expected = expected.replace(never[k], "X")
            if theirs.status_code != 404 or unknown.status_code != 404 or same != expected:
                leaks.append((method, path, theirs.status_code, theirs.text[:200]))
    print(f"EVIDENCE cross-tenant: {tried} requests on another tenant's objects, {len(leaks)} leaks")
    assert not leaks, leaks
    assert tried >= 20


def test_lists_show_only_the_tenants_own_objects(client: TestClient, world: dict[str, Any]) -> None:
    ids = world["ids"]
    for method, path in operations(client):
        if method != "GET" or PARAMS.search(path):
            continue
        r = client.get(path, headers=world["b"])
        assert r.status_code < 500, (path, r.text)
        for value in (ids["job_id"], world["running"], ids["dataset_id"], ids["key_id"]):
            assert value not in r.text, (path, r.text[:300])


def test_other_tenants_writes_change_nothing(client: TestClient, world: dict[str, Any]) -> None:
    ids, b = world["ids"], world["b"]
    before = {
        p: client.get(p).json() for p in (f"/v1/datasets/{ids['dataset_id']}", f"/v1/jobs/{world['running']}")
    }
    assert client.post(f"/v1/jobs/{world['running']}/cancel", headers=b).status_code == 404
    assert client.delete(f"/v1/datasets/{ids['dataset_id']}", headers=b).status_code == 404
    assert client.post(f"/v1/keys/{ids['key_id']}/revoke", headers=b).status_code == 404
    # naming A's dataset in B's job spec reads exactly like naming one that does not exist
    theirs = client.post("/v1/jobs", json=job_spec(f"dataset:{ids['dataset_id']}"), headers=b)
    assert theirs.status_code == 422
    assert theirs.json()["detail"][0]["msg"].startswith(f"no dataset {ids['dataset_id']}")
    after = client.get(f"/v1/datasets/{ids['dataset_id']}").json()
    assert after == before[f"/v1/datasets/{ids['dataset_id']}"]
    assert not client.get(f"/v1/jobs/{world['running']}").json()["cancel_requested"]
    assert any(k["id"] == ids["key_id"] and k["revoked_at"] is None for k in client.get("/v1/keys").json())
    client.post(f"/v1/jobs/{world['running']}/cancel")


def test_the_same_upload_in_two_tenants_shares_nothing(client: TestClient, world: dict[str, Any]) -> None:
    rt = client.app.state.runtime
    content = (Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_forget.jsonl").read_bytes()
    theirs = client.post(
        "/v1/datasets", files={"file": ("f.jsonl", content)}, headers=world["b"]
    ).json()  # the same bytes as A's dataset
    assert theirs["id"] != world["ids"]["dataset_id"]
    assert client.delete(f"/v1/datasets/{theirs['id']}", headers=world["b"]).status_code == 204
    with rt.sessions() as session:
        from lethe.service.infra.db import Dataset

        mine = session.get(Dataset, uuid.UUID(world["ids"]["dataset_id"]))
        assert mine is not None and mine.storage_key.startswith("datasets/default/")
        assert rt.storage.exists(mine.storage_key)  # B's delete removed only B's object
