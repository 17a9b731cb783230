"""Schemathesis with every check (`--checks all`: no 5xx, status codes, content types, headers and
bodies as the schema declares them, schema-valid requests accepted and schema-violating ones
refused, 405 with `Allow` for other methods, 401 without a key, resources gone after DELETE...)
over the API as served (embedded defaults, fake engine, a real loopback port), in its four phases:
the schema's examples, coverage, fuzzing and stateful sequences.

    pytest tests/unit/test_api_fuzz.py -s      # prints the figures (docs/reliability.md)

The run is deterministic (`--generation-deterministic`) with `MAX_EXAMPLES` cases per operation
in the fuzzing phase (the coverage phase, most of the requests, derives its own), so it repeats and
fits in CI (under two minutes on two shared cores). Before it, a job succeeds on the fake
engine: a share of the generated ids are that job's, its dataset's and its artifacts' names, so
the certificate, the artifacts and the event stream answer 200 too, not only 404.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from service_helpers import ADMIN_KEY, AUTH, fake_run_job, fast_settings, free_port, job_spec

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
MAX_EXAMPLES = 20  # per operation and phase
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
# Operations whose server checks more than a JSON Schema can say, so a schema-valid request may
# still be a 422 naming the field: an opaque `cursor` from a previous page, an upload's rows, a
# spec's cross-field rules and data references, a registered source that must exist, a webhook
# host that must resolve to a public address. Every other operation accepts whatever its schema
# allows.
CHECKED_BEYOND_SCHEMA = [
    "datasets.list",
    "jobs.list",
    "datasets.upload",
    "datasets.register",
    "jobs.submit",
    "webhooks.set_config",
]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' default


class Counting:
    """ASGI wrapper: counts the HTTP requests the app receives, by status class."""

    def __init__(self, app: Any) -> None:
        self.app, self.tally = app, Counter[str]()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.tally[f"{message['status'] // 100}xx"] += 1
            await send(message)

        await self.app(scope, receive, counted if scope["type"] == "http" else send)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Counting]]:
    """The API on a free loopback port, in a thread of this process (so the fake engine applies)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lethe.core.run.pipeline.run_job", fake_run_job)
        # hub access: the schema's example `hf:org/name` must be accepted (positive data acceptance)
        s = fast_settings(
            tmp_path_factory.mktemp("fuzz"), allowed_s3_buckets=["corpora"], max_upload_mb=1, hub_access=True
        )
        migrate.upgrade(s)
        app, port = Counting(build_app(s)), free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        try:
            yield url, app
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def known_objects(url: str) -> dict[str, list[str]]:
    """A dataset and a job that succeeded on it, with its artifacts: ids the run can draw."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        files = {"file": ("forget.jsonl", (EXAMPLES / "tiny_forget.jsonl").read_bytes())}
        dataset = client.post("/v1/datasets", files=files).json()
        job = client.post("/v1/jobs", json=job_spec(dataset["reference"])).json()
        deadline = time.monotonic() + 60
        while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded", job
        names = [a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()]
    return {"jobs": [job["id"]], "datasets": [dataset["id"]], "artifacts": names}


def config(known: dict[str, list[str]]) -> str:
    """schemathesis.toml: the drawn ids, and the operations that check beyond their schema."""
    lines = [f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n" for name, values in known.items()]
    lines.append("[parameters]")
    for parameter, dictionary in (("job_id", "jobs"), ("dataset_id", "datasets"), ("name", "artifacts")):
        lines.append(f'"path.{parameter}" = {{ dictionary = "{dictionary}", probability = 0.5 }}')
    lines.append("\n[[operations]]")
    lines.append(f"include-operation-id = {json.dumps(CHECKED_BEYOND_SCHEMA)}")
    lines.append(f"checks.positive_data_acceptance.expected-statuses = {json.dumps([*ACCEPTED, '422'])}")
    return "\n".join(lines) + "\n"


def schemathesis(url: str, folder: Path, known: dict[str, list[str]]) -> dict[str, Any]:
    (folder / "schemathesis.toml").write_text(config(known))
    report = folder / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(folder / "schemathesis.toml")]
    command += ["run", f"{url}/openapi.json", "--checks", "all", "-H", f"Authorization: Bearer {ADMIN_KEY}"]
    command += ["--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--workers", "1"]
    command += ["--request-timeout", "30", "--no-color", "--report", "json"]
    command += ["--report-json-path", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=360, cwd=folder)
    (folder / "output.txt").write_text(done.stdout + done.stderr)  # the failures, in full
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    return json.loads(report.read_text())


def test_schemathesis_with_every_check_passes(served: tuple[str, Counting], tmp_path: Path) -> None:
    url, counting = served
    known = known_objects(url)
    before = counting.tally.copy()
    report = schemathesis(url, tmp_path, known)
    operations, cases = report["operations"], report["test_cases"]
    answers = counting.tally - before
    phases = ", ".join(f"{name} {phase['status']}" for name, phase in report["phases"].items())
    print(
        f"EVIDENCE schemathesis --checks all: {operations['tested']} of {operations['total']} operations, "
        f"{cases['generated']} test cases, {answers.total()} requests {dict(sorted(answers.items()))}, "
        f"{len(report['failures'])} failures, {len(report['errors'])} errors, "
        f"phases: {phases}, "
        f"{report['running_time']:.0f} s"
    )
    assert report["complete"] and not report["failures"] and not report["errors"]
    assert operations["tested"] == operations["total"] >= 25
    assert all(phase["status"] == "success" for phase in report["phases"].values()), report["phases"]
    assert not answers["5xx"]
