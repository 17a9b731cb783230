"""Webhooks: every state change of a job reaches a real HTTP receiver on loopback with a valid
HMAC signature; a 500 is retried with backoff; the delivery log shows each try; private
addresses are refused unless the setting allows them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, fast_settings, job_spec, upload, wait_for

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate

pytest_plugins = ["service_fixtures"]  # fake_engine, client (private callbacks refused)


@dataclass
class Receiver:
    """An HTTP server that records each POST and answers the next code of `answers` (then 200)."""

    answers: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
            self.send_response(state.answers.pop(0) if state.answers else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def hooks_client(tmp_path: Path, fake_engine: None) -> Iterator[TestClient]:
    """The embedded API with private callbacks allowed (the receiver is on loopback), fast retries."""
    settings = fast_settings(
        tmp_path / "lethe",
        webhook_allow_private=True,
        webhook_backoff_s=0.2,
        webhook_poll_s=0.05,
        webhook_max_attempts=3,
    )
    migrate.upgrade(settings)
    with TestClient(build_app(settings), headers=AUTH) as c:
        yield c


def signature_ok(secret: str, request: dict[str, Any]) -> bool:
    headers = {k.lower(): v for k, v in request["headers"].items()}
    timestamp = headers["x-lethe-timestamp"]
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(headers["x-lethe-signature"], f"v1={expected}")


def settled(client: TestClient, job_id: str, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The job's deliveries once `count` of them are no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries = client.get(f"/v1/jobs/{job_id}/webhooks").json()
        if len(deliveries) >= count and all(d["status"] != "pending" for d in deliveries):
            return deliveries
        time.sleep(0.05)
    raise AssertionError(f"deliveries not settled: {deliveries}")


def test_every_state_change_reaches_the_receiver_signed_and_a_500_is_retried(
    hooks_client: TestClient, receiver: Receiver
) -> None:
    receiver.answers = [500]  # the first callback fails once
    ref = upload(hooks_client).json()["reference"]
    job = hooks_client.post("/v1/jobs", json=job_spec(ref), params={"callback_url": receiver.url}).json()
    wait_for(hooks_client, job["id"])
    deliveries = settled(hooks_client, job["id"], 3)
    assert [d["body"]["job"]["status"] for d in deliveries] == ["queued", "running", "succeeded"]
    assert all(d["status"] == "delivered" for d in deliveries)
    retried = [d for d in deliveries if d["attempts"] == 2]
    assert len(retried) == 1 and [t["status_code"] for t in retried[0]["tries"]] == [500, 200]
    assert retried[0]["tries"][0]["error"] == "the receiver answered 500"

    secret = hooks_client.get("/v1/webhook").json()["secret"]
    assert len(receiver.received) == 4 and all(signature_ok(secret, r) for r in receiver.received)
    assert not signature_ok("whsec_wrong", receiver.received[0])
    ids = [r["headers"]["X-Lethe-Delivery"] for r in receiver.received]
    assert ids.count(retried[0]["id"]) == 2  # the retry is the same delivery: receivers can dedupe
    first, second = [
        r["at"] for r in receiver.received if r["headers"]["X-Lethe-Delivery"] == retried[0]["id"]
    ]
    assert second - first >= 0.2  # the backoff
    body = json.loads(receiver.received[-1]["body"])
    assert body["type"] == "job.status" and body["job"]["id"] == job["id"] and body["tenant"] == "default"


def test_a_receiver_that_keeps_failing_is_given_up_after_max_attempts(
    hooks_client: TestClient, receiver: Receiver
) -> None:
    receiver.answers = [500] * 100
    ref = upload(hooks_client).json()["reference"]
    job = hooks_client.post("/v1/jobs", json=job_spec(ref), params={"callback_url": receiver.url}).json()
    deliveries = settled(hooks_client, job["id"], 3)
    assert {(d["status"], d["attempts"]) for d in deliveries} == {("failed", 3)}


def test_the_tenant_default_is_used_without_a_job_callback(
    hooks_client: TestClient, receiver: Receiver
) -> None:
    before = hooks_client.get("/v1/webhook").json()
    config = hooks_client.put("/v1/webhook", json={"url": receiver.url, "rotate_secret": True}).json()
    assert config["url"] == receiver.url and config["secret"] != before["secret"]
    ref = upload(hooks_client).json()["reference"]
    job = hooks_client.post("/v1/jobs", json=job_spec(ref)).json()
    settled(hooks_client, job["id"], 3)
    assert all(signature_ok(config["secret"], r) for r in receiver.received)
    hooks_client.put("/v1/webhook", json={"url": None})
    quiet = hooks_client.post("/v1/jobs", json=job_spec(ref)).json()
    wait_for(hooks_client, quiet["id"])
    assert hooks_client.get(f"/v1/jobs/{quiet['id']}/webhooks").json() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
        "ftp://example.com/x",
        "http://user:pw@example.com/",
    ],
)
def test_private_and_odd_callbacks_are_refused(client: TestClient, url: str) -> None:
    ref = upload(client).json()["reference"]
    reply = client.post("/v1/jobs", json=job_spec(ref), params={"callback_url": url})
    assert reply.status_code == 422 and reply.json()["detail"][0]["field"] == "callback_url", reply.text
    assert client.put("/v1/webhook", json={"url": url}).status_code == 422
