"""The client SDK and the CLI verbs against `lethe serve` (embedded defaults, a free loopback
port), running examples/tiny.yaml on the real engine: submit, follow, download with SHA-256
checks, the HTML report, and a certificate whose hashes we recompute here independently."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lethe.cli.main import main
from lethe.client.sdk import LetheClient

Stack = Any  # tests/integration/conftest.py:Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sdk_runs_a_tiny_job_end_to_end(embedded_stack: Stack, tmp_path: Path) -> None:
    from lethe.core.models.fingerprint import weights_sha256
    from lethe.core.models.tiny import build_tiny

    with LetheClient(embedded_stack.url, embedded_stack.env["LETHE_BOOTSTRAP_KEY"]) as lethe:
        job = lethe.submit(EXAMPLES / "tiny.yaml")
        job = lethe.wait(job.id, progress=False, poll_s=0.2, timeout=240)
        assert job.status == "succeeded", job.error
        paths = {p.name for p in lethe.download(job.id, tmp_path)}
        assert {"adapter.tar.gz", "metrics.json", "report.html", "model.json"} <= paths
        assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
        lethe.certificate(job.id, tmp_path / "certificate.json")
        result = lethe.verify_certificate(tmp_path / "certificate.json", pin_to_server=True)
    assert result.ok and result.pinned, result.reason
    cert = result.certificate
    assert cert["base_model"]["reference"] == "tiny-llama"
    assert cert["base_model"]["weights_sha256"] == weights_sha256(build_tiny("tiny-llama")[0])
    certified = {d["used_as"]: d["sha256"] for d in cert["datasets"]}
    assert certified["unlearn.forget"] == sha256(EXAMPLES / "data" / "tiny_forget.jsonl")
    assert certified["unlearn.normal"] == sha256(EXAMPLES / "data" / "tiny_normal.jsonl")
    assert cert["adapter"]["archive_sha256"] == sha256(tmp_path / "adapter.tar.gz")
    assert cert["metrics"]["after"] == job.metrics["after"]
    assert cert["environment"]["versions"]["torch"]
    report = (tmp_path / "report.html").read_text()
    # loss curves of the fine-tune and unlearn stages, metrics before/after, judge accuracy
    assert report.count("data:image/png;base64,") == 4 and "Sample generations" in report


def test_cli_submits_waits_downloads_and_verifies(
    embedded_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LETHE_URL", embedded_stack.url)
    monkeypatch.setenv("LETHE_API_KEY", embedded_stack.env["LETHE_BOOTSTRAP_KEY"])
    assert main(["datasets", "upload", str(EXAMPLES / "data" / "tiny_forget.jsonl")]) == 0
    assert re.search(r"dataset:\S+  8 rows  sha256 [0-9a-f]{64}", capsys.readouterr().out)

    assert (
        main(
            [
                "jobs",
                "submit",
                str(EXAMPLES / "tiny.yaml"),
                "--wait",
                "--quiet",
                "--out",
                str(tmp_path / "first"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    job_id = re.search(r"submitted job (\S+)", out).group(1)  # type: ignore[union-attr]
    assert "succeeded" in out and "forget_nll" in out and "certificate:" in out
    key_id = re.search(r"--key-id ([0-9a-f]{64})", out).group(1)  # type: ignore[union-attr]

    assert main(["jobs", "status", job_id]) == 0
    assert f"{job_id}  succeeded" in capsys.readouterr().out
    assert main(["jobs", "download", job_id, "--out", str(tmp_path / "again")]) == 0
    certificate = tmp_path / "again" / "certificate.json"
    assert certificate.read_bytes() == (tmp_path / "first" / "certificate.json").read_bytes()
    assert (
        main(
            [
                "verify",
                str(certificate),
                "--key-id",
                key_id,
                "--adapter",
                str(tmp_path / "again" / "adapter.tar.gz"),
            ]
        )
        == 0
    )
    capsys.readouterr()

    monkeypatch.setenv("LETHE_API_KEY", "not-a-key")
    assert main(["jobs", "status", job_id]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: GET /v1/jobs/") and "401" in err and len(err.strip().splitlines()) == 1


def test_cli_cancels_a_running_job(
    embedded_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = embedded_stack.env["LETHE_BOOTSTRAP_KEY"]
    spec = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    spec["unlearn"]["train"]["steps"] = 400
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(spec))
    for name in ("tiny_forget.jsonl", "tiny_normal.jsonl"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_bytes((EXAMPLES / "data" / name).read_bytes())
    args = ["--url", embedded_stack.url, "--api-key", key]
    assert main(["jobs", "submit", str(tmp_path / "long.yaml"), *args]) == 0
    job_id = re.search(r"submitted job (\S+)", capsys.readouterr().out).group(1)  # type: ignore[union-attr]
    with LetheClient(embedded_stack.url, key) as lethe:
        deadline = time.monotonic() + 120
        while (lethe.job(job_id).progress or {}).get("step", 0) < 1 or lethe.job(job_id).stage != "unlearn":
            assert time.monotonic() < deadline, lethe.job(job_id)
            time.sleep(0.2)
        assert main(["jobs", "cancel", job_id, *args]) == 0
        assert "stops at its next step" in capsys.readouterr().out
        job = lethe.wait(job_id, progress=False, poll_s=0.2, timeout=60)
        assert job.status == "cancelled"
        assert lethe.webhook_deliveries(job_id) == []  # no callback configured: nothing sent
        lines = lethe.audit(target=f"job:{job_id}")
    assert [line["detail"].get("status") for line in lines if line["action"] == "job.status"] == [
        "queued",
        "running",
        "cancelled",
    ]
    assert any(line["action"] == "POST /v1/jobs/{job_id}/cancel" for line in lines)


def test_certificates_and_the_audit_chain_on_postgres_with_a_celery_worker(celery_stack: Stack) -> None:
    """The worker (another process, no signing key) records the evidence; the API signs it. Two
    jobs and their requests append to one chain at once; PostgreSQL refuses to edit it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DatabaseError

    from lethe.service.infra.runtime import build_runtime
    from lethe.service.infra.settings import Settings
    from lethe.service.trust import audit

    with LetheClient(celery_stack.url, celery_stack.env["LETHE_BOOTSTRAP_KEY"]) as lethe:
        submitted = [lethe.submit(EXAMPLES / "tiny.yaml") for _ in range(2)]
        for job in submitted:
            assert lethe.wait(job.id, progress=False, poll_s=0.2, timeout=240).status == "succeeded"
            result = lethe.verify_certificate(lethe.certificate(job.id), pin_to_server=True)
            assert result.ok and result.certificate["base_model"]["weights_sha256"], result.reason
    rt = build_runtime(Settings(database_url=celery_stack.database_url))
    try:
        report = audit.verify_database(rt.sessions)
        assert report.ok and report.checked >= 10, report.problems
    finally:
        rt.close()
    engine = create_engine(celery_stack.database_url)
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET action = 'x' WHERE seq = 1"))
    engine.dispose()
