"""Helpers for the service's unit tests: a fake engine, a recording dispatcher, request helpers.

The fake `run_job` honours the real interface (hooks, Cancelled, the run folder's files) in
milliseconds, so these tests exercise the service's own logic; the integration tests run the
real engine on the tiny model.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from lethe.core.data.examples import DataError
from lethe.core.run.pipeline import RunSummary
from lethe.core.training.engine import Cancelled, Progress, RunHooks
from lethe.service.infra.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
ADMIN_KEY = "lethe-test-admin-key"  # the bootstrap key of the test settings (tenant `default`)
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fast_settings(data_dir: Path, **extra: Any) -> Settings:
    extra.setdefault("bootstrap_key", ADMIN_KEY)
    return Settings(data_dir=data_dir, heartbeat_s=0.05, progress_interval_s=0.0, **extra)


def fake_run_job(spec: Any, out_dir: Path, hooks: RunHooks | None = None) -> RunSummary:
    """Stands in for lethe.core.run.pipeline.run_job. `spec.name` picks the behaviour:
    `fail` raises a DataError, `slow` takes 0.05 s per step; steps come from unlearn.train.steps."""
    hooks = hooks or RunHooks()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.log").write_text("started\n")
    (out / "spec.yaml").write_text(f"name: {spec.name}\n")
    hooks.on_stage and hooks.on_stage("unlearn")
    if spec.name == "fail":
        raise DataError("row 3 of forget.jsonl has no 'response': map it with columns")
    total = spec.unlearn.train.steps or 1
    for step in range(1, total + 1):
        if hooks.cancelled():
            raise Cancelled(f"cancelled before step {step}")
        time.sleep(0.05 if spec.name == "slow" else 0.0)
        with open(out / "train_log.jsonl", "a") as log:
            log.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\n")
        if hooks.on_progress:
            hooks.on_progress(Progress("unlearn", step, total, {"loss": 1.0 / step}, 0.0, step * 0.01))
    (out / "adapter").mkdir(exist_ok=True)
    (out / "adapter" / "adapter_config.json").write_text('{"r": 4}')
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    metrics = {"before": {"forget_nll": 1.0}, "after": {"forget_nll": 3.0}, "per_example": {}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return RunSummary(out_dir=out, metrics=metrics, stopped_reason="max_steps")


class RecordingDispatcher:
    """Keeps jobs queued: records what would have been dispatched."""

    def __init__(self) -> None:
        self.sent: list[tuple[uuid.UUID, str]] = []
        self.fail = False

    def dispatch(self, job_id: uuid.UUID, queue: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((job_id, queue))

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def check(self) -> None: ...

    def pending(self) -> set[uuid.UUID] | None:
        return {job_id for job_id, _ in self.sent}


def upload(
    client: TestClient, filename: str = "tiny_forget.jsonl", data: bytes | None = None, **fields: str
) -> Any:
    """POST a file (by default one of examples/data) with form fields (schema, format, name...)."""
    content = data if data is not None else (EXAMPLES / filename).read_bytes()
    return client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)


def job_spec(forget: str, normal: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A small valid spec (method ga needs no normal data) over dataset references."""
    spec: dict[str, Any] = {
        "name": "t",
        "model": {"name": "tiny-llama", "device": "cpu"},
        "unlearn": {"method": "ga", "forget": {"source": forget}, "train": {"steps": 3}},
    }
    if normal:
        spec["unlearn"]["normal"] = {"source": normal}
    spec.update(overrides)
    return spec


def wait_for(
    client: TestClient,
    job_id: str,
    states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    timeout: float = 20.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {job}")
