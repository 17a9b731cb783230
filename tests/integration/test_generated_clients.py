"""A Python client generated from the served /openapi.json (openapi-python-client, offline, with
every generator warning an error), imported as generated, runs a tiny job end to end on each
stack: upload the two datasets, submit examples/tiny.yaml over them (fewer steps), poll, read the
events (JSON and the event stream), download and check the artifacts, fetch and verify the
certificate, export the audit log; errors come back as the declared `ErrorOut`.

The TypeScript client is checked in tests/unit/test_typescript_client.py."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from lethe.evidence.certificate import load_public_key, verify_bytes

Stack = Any  # tests/integration/conftest.py:Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FINAL = ("succeeded", "failed", "cancelled")


class Generated:
    """The generated package, by the names its generator gives: `api("jobs", "jobs_submit")`."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.models = importlib.import_module(f"{package}.models")
        self.types = importlib.import_module(f"{package}.types")
        self.client_module = importlib.import_module(f"{package}.client")

    def api(self, tag: str, operation: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.api.{tag}.{operation}")


def generate(url: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Generated:
    """The served schema only (no network beyond the stack): generate, then import."""
    schema = folder / "openapi.json"
    schema.write_bytes(httpx.get(f"{url}/openapi.json", timeout=30).raise_for_status().content)
    config = folder / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is imported as generated
    package = f"lethe_api_{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(schema)]
        + ["--output-path", str(folder / package), "--meta", "none", "--config", str(config)]
        + ["--fail-on-warning"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    monkeypatch.syspath_prepend(str(folder))
    return Generated(package)


def tiny_spec(forget: str, normal: str) -> dict[str, Any]:
    """examples/tiny.yaml over the uploaded datasets, with fewer steps and examples."""
    spec = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    refs = {"data/tiny_forget.jsonl": forget, "data/tiny_normal.jsonl": normal}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("source") in refs:
                node["source"] = refs[node["source"]]
            for value in node.values():
                walk(value)

    walk(spec)
    assert "data/" not in json.dumps(spec), spec  # every local source is replaced
    spec["name"] = "generated-client"
    spec["finetune"]["train"]["steps"] = 8
    spec["unlearn"]["train"]["steps"] = 2
    spec["eval"].update(max_examples=2, generation={"max_new_tokens": 4})
    return spec


def upload(gen: Generated, client: Any, name: str) -> Any:
    form = gen.models.DatasetsUploadForm(
        file=gen.types.File(payload=io.BytesIO((EXAMPLES / "data" / name).read_bytes()), file_name=name)
    )
    dataset = gen.api("datasets", "datasets_upload").sync(client=client, body=form)
    assert isinstance(dataset, gen.models.DatasetOut), dataset
    return dataset


def run_job(gen: Generated, client: Any, spec: dict[str, Any]) -> Any:
    job = gen.api("jobs", "jobs_submit").sync(client=client, body=gen.models.JobSpec.from_dict(spec))
    assert isinstance(job, gen.models.JobDetail), job.to_dict()
    get = gen.api("jobs", "jobs_get")
    deadline = time.monotonic() + 300
    while job.status not in FINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        job = get.sync(client=client, job_id=job.id)
    assert job.status == "succeeded", (job.status, job.error)
    return job


def check_events(gen: Generated, client: Any, job_id: uuid.UUID) -> None:
    events = gen.api("jobs", "jobs_events").sync(client=client, job_id=job_id)
    assert all(isinstance(e, gen.models.EventOut) for e in events)
    statuses = [e.payload["status"] for e in events if e.kind == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
    stream = gen.api("jobs", "jobs_stream_events").sync(client=client, job_id=job_id)
    assert isinstance(stream, str) and "event: status" in stream, stream[:300]
    ids = [line.removeprefix("id: ") for line in stream.splitlines() if line.startswith("id: ")]
    assert ids == [str(e.id) for e in events]


def check_artifacts(gen: Generated, client: Any, job_id: uuid.UUID) -> dict[str, str]:
    artifacts = gen.api("jobs", "jobs_list_artifacts").sync(client=client, job_id=job_id)
    names = {a.name: a for a in artifacts}
    assert {"adapter.tar.gz", "metrics.json", "report.html"} <= set(names), sorted(names)
    download = gen.api("jobs", "jobs_download_artifact")
    for name in ("adapter.tar.gz", "metrics.json"):
        file = download.sync(client=client, job_id=job_id, name=name)
        assert isinstance(file, gen.types.File), file
        assert hashlib.sha256(file.payload.read()).hexdigest() == names[name].sha256, name
    return {name: a.sha256 for name, a in names.items()}


def check_certificate(gen: Generated, client: Any, job_id: uuid.UUID, artifacts: dict[str, str]) -> None:
    reply = gen.api("certificates", "certificates_get").sync_detailed(client=client, job_id=job_id)
    document = reply.parsed
    assert isinstance(document, gen.models.CertificateFile), reply.content[:300]
    assert document.certificate.job.id == job_id and document.signature.algorithm == "Ed25519"
    assert document.certificate.adapter.archive_sha256 == artifacts["adapter.tar.gz"]
    key = gen.api("certificates", "certificates_signing_key").sync(client=client)
    assert verify_bytes(reply.content, load_public_key(key.public_key)).ok  # the bytes as served


def check_errors_and_audit(gen: Generated, client: Any) -> None:
    missing = gen.api("jobs", "jobs_get").sync(client=client, job_id=uuid.uuid4())
    assert isinstance(missing, gen.models.ErrorOut) and isinstance(missing.detail, str)
    bad = gen.types.File(payload=io.BytesIO(b"not json\n"), file_name="x.jsonl")
    form = gen.models.DatasetsUploadForm(file=bad)
    refused = gen.api("datasets", "datasets_upload").sync(client=client, body=form)
    assert isinstance(refused, gen.models.ErrorOut), refused
    assert [type(p).__name__ for p in refused.detail] == ["Problem"] and refused.detail[0].field
    ready = gen.api("health", "health_ready").sync(client=client)
    assert isinstance(ready, gen.models.ReadyOut) and ready.status == "ready"
    export = gen.api("audit", "audit_export").sync(client=client)
    actions = [json.loads(line)["action"] for line in export.payload.read().splitlines()]
    assert "POST /v1/jobs" in actions and "certificate.issued" in actions, actions[-10:]


def test_a_generated_python_client_runs_a_tiny_job(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = generate(stack.url, tmp_path, monkeypatch)
    client = gen.client_module.AuthenticatedClient(
        base_url=stack.url,
        token=stack.env["LETHE_BOOTSTRAP_KEY"],
        raise_on_unexpected_status=True,  # a status the schema does not declare fails the test
        timeout=httpx.Timeout(120),
    )
    with client:
        forget = upload(gen, client, "tiny_forget.jsonl")
        normal = upload(gen, client, "tiny_normal.jsonl")
        assert forget.row_count == 8 and forget.reference == f"dataset:{forget.id}"
        job = run_job(gen, client, tiny_spec(forget.reference, normal.reference))
        check_events(gen, client, job.id)
        artifacts = check_artifacts(gen, client, job.id)
        check_certificate(gen, client, job.id, artifacts)
        check_errors_and_audit(gen, client)
