"""/v1/events: the tenant-wide event log and its stream, who submitted each job, and the example
specs the console starts from."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from service_helpers import AUTH, job_spec, upload, wait_for

from lethe.cli.wiring import build_app
from lethe.service.infra.settings import Settings
from lethe.service.trust import auth

pytest_plugins = ["service_fixtures"]


def read_stream(client: TestClient, path: str, **kwargs: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The stream's `id` lines and its events' data, read to its end."""
    with client.stream("GET", path, **kwargs) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    ids = [line[3:].strip() for line in lines if line.startswith("id:")]
    return ids, [json.loads(line[5:]) for line in lines if line.startswith("data:")]


def test_the_tenants_events_in_one_log_and_one_stream(client: TestClient) -> None:
    rt = client.app.state.runtime
    forget = upload(client).json()["reference"]
    jobs = [
        wait_for(client, client.post("/v1/jobs", json=job_spec(forget, name=n)).json()["id"]) for n in "ab"
    ]
    listed = client.get("/v1/events", params={"after": 0, "limit": 1000}).json()
    assert {e["job_id"] for e in listed} == {j["id"] for j in jobs}
    assert [e["id"] for e in listed] == sorted(e["id"] for e in listed)
    per_job = client.get(f"/v1/jobs/{jobs[0]['id']}/events").json()
    assert [e["id"] for e in listed if e["job_id"] == jobs[0]["id"]] == [e["id"] for e in per_job]
    # no job is active: the stream sends what is there and ends
    ids, streamed = read_stream(client, "/v1/events/stream", params={"after": 0})
    assert [e["id"] for e in streamed] == [e["id"] for e in listed] and ids[0] == "0"
    ids, resumed = read_stream(client, "/v1/events/stream", headers={"Last-Event-ID": str(listed[2]["id"])})
    assert [e["id"] for e in resumed] == [e["id"] for e in listed[3:]]
    # left out `after`: from now on, and the stream says where that is
    ids, fresh = read_stream(client, "/v1/events/stream")
    assert fresh == [] and ids == [str(listed[-1]["id"])]
    # another tenant sees none of it
    _, b_key = auth.create_key(rt.sessions, "tenant-b", "read")
    b = {"Authorization": f"Bearer {b_key}"}
    assert client.get("/v1/events", params={"after": 0}, headers=b).json() == []
    assert read_stream(client, "/v1/events/stream", params={"after": 0}, headers=b)[1] == []


def test_jobs_say_which_key_submitted_them(client: TestClient) -> None:
    rt = client.app.state.runtime
    forget = upload(client).json()["reference"]
    row, key = auth.create_key(rt.sessions, "default", "read,submit", "privacy-office")
    made = client.post("/v1/jobs", json=job_spec(forget), headers={"Authorization": f"Bearer {key}"}).json()
    assert (made["submitted_by"], made["submitted_by_name"]) == (row.id, "privacy-office")
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["items"]}
    assert listed[made["id"]]["submitted_by_name"] == "privacy-office"
    assert client.get(f"/v1/jobs/{made['id']}").json()["submitted_by"] == row.id


def test_the_stream_lives_while_a_job_is_queued_and_ends_on_shutdown(queued_client: TestClient) -> None:
    client = queued_client
    forget = upload(client).json()["reference"]
    job = client.post("/v1/jobs", json=job_spec(forget)).json()
    closing = client.app.state.closing = threading.Event()
    timer = threading.Timer(1.5, closing.set)  # the server shutting down (lethe serve's SIGTERM)
    timer.start()
    try:
        _, events = read_stream(client, "/v1/events/stream", params={"after": 0})
    finally:
        timer.cancel()
    assert closing.is_set()  # it ended because of the shutdown, not on its own
    assert [(e["job_id"], e["kind"]) for e in events] == [(job["id"], "status")]


def test_example_specs_come_from_the_configured_folder(settings: Settings, tmp_path: Path) -> None:
    """An installed package has no repository `examples/`: the image copies them and names the
    folder with LETHE_EXAMPLES_DIR, which the console's "start from an example" lists."""
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "mine.yaml").write_text("# My own example.\nmodel: {name: tiny-llama}\n")
    (folder / "_draft.yaml").write_text("model: {name: tiny-llama}\n")  # drafts stay hidden
    with TestClient(build_app(settings.model_copy(update={"examples_dir": folder})), headers=AUTH) as c:
        found = c.get("/v1/specs/examples").json()
    assert [(e["name"], e["description"]) for e in found] == [("mine.yaml", "My own example.")]
