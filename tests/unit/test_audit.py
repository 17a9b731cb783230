"""The audit log: every state-changing request and job state change is a line of one hash chain;
the chain verifies, and an edited or deleted line is detected (by `lethe audit verify` too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import job_spec, upload, wait_for
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError

from lethe.cli.main import main
from lethe.service.infra.runtime import build_runtime
from lethe.service.infra.settings import Settings
from lethe.service.trust import audit, auth

pytest_plugins = ["service_fixtures"]  # client (embedded API, fake engine), settings


@pytest.fixture
def history(client: TestClient, settings: Settings) -> tuple[TestClient, str]:
    """A dataset upload, a job run to success, a refused request: the log has a few lines."""
    ref = upload(client).json()["reference"]
    job = client.post("/v1/jobs", json=job_spec(ref)).json()
    wait_for(client, job["id"])
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    return client, job["id"]


def verify(settings: Settings) -> audit.ChainReport:
    rt = build_runtime(settings)
    try:
        return audit.verify_database(rt.sessions)
    finally:
        rt.close()


def tamper(settings: Settings, sql: str) -> None:
    """What someone with write access to the database does: drop the guard, change the log."""
    engine = create_engine(settings.db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        conn.execute(text(sql))
    engine.dispose()


def test_requests_and_state_changes_form_a_verified_chain(history, settings: Settings) -> None:
    client, job_id = history
    lines = client.get("/v1/audit", params={"target": f"job:{job_id}"}).json()["items"]
    actions = [(line["action"], line["detail"].get("status"), line["status_code"]) for line in lines]
    assert ("POST /v1/jobs", None, 201) in actions
    assert [a for a in actions if a[0] == "job.status"] == [
        ("job.status", "queued", None),
        ("job.status", "running", None),
        ("job.status", "succeeded", None),
    ]
    assert ("POST /v1/jobs/{job_id}/cancel", None, 409) in actions
    submit = next(line for line in lines if line["action"] == "POST /v1/jobs")
    assert (submit["key_id"], submit["tenant"], submit["actor"]) == ("bootstrap", "default", "key")
    assert len(submit["request_sha256"]) == 64
    report = verify(settings)
    assert report.ok and report.checked >= 6, report.problems


def test_the_database_refuses_to_change_the_log(history, settings: Settings) -> None:
    engine = create_engine(settings.db_url)
    for sql in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    engine.dispose()


def test_an_edited_line_is_detected(
    history, settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper(settings, "UPDATE audit_log SET status_code = 200 WHERE status_code = 409")
    report = verify(settings)
    assert not report.ok and any("was edited" in p for p in report.problems), report.problems
    monkeypatch.setenv("LETHE_DATA_DIR", str(settings.data_dir))
    assert main(["audit", "verify"]) == 1
    assert "FAILED: line" in capsys.readouterr().out


def test_a_deleted_line_is_detected(history, settings: Settings) -> None:
    tamper(settings, "DELETE FROM audit_log WHERE seq = 2")
    assert any("line 2 is missing" in p for p in verify(settings).problems)


def test_lines_deleted_from_the_end_are_detected(history, settings: Settings) -> None:
    tamper(settings, "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
    assert any("deleted from the end" in p for p in verify(settings).problems)


def test_a_clean_log_verifies_from_the_command_line(
    history, settings: Settings, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LETHE_DATA_DIR", str(settings.data_dir))
    assert main(["audit", "verify"]) == 0
    assert "OK:" in capsys.readouterr().out


def test_jsonl_export_verifies_and_shows_edits(
    history, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = history
    reply = client.get("/v1/audit", params={"format": "jsonl"})
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    export = tmp_path / "audit.jsonl"
    export.write_bytes(reply.content)
    assert main(["audit", "verify", "--file", str(export)]) == 0
    lines: list[dict[str, Any]] = [json.loads(x) for x in reply.text.splitlines()]
    lines[1]["detail"] = {"status": "cancelled"}
    export.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["audit", "verify", "--file", str(export)]) == 1
    assert "line 2 was edited" in capsys.readouterr().out


def test_the_audit_log_is_for_admins_of_the_tenant(history, settings: Settings) -> None:
    client, _ = history
    rt = build_runtime(settings)
    _, reader = auth.create_key(rt.sessions, "default", "read,submit")
    _, other_admin = auth.create_key(rt.sessions, "other", "admin")
    rt.close()
    assert client.get("/v1/audit", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    assert client.get("/v1/audit", headers={"Authorization": f"Bearer {other_admin}"}).json()["items"] == []
    anonymous = client.post("/v1/jobs", json={}, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    last = client.get("/v1/audit", params={"action": "POST /v1/jobs"}).json()["items"]
    assert all(line["tenant"] == "default" for line in last)  # the anonymous line has no tenant
    page = client.get("/v1/audit", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_after"] == page["items"][-1]["seq"]
