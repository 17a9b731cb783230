"""Load on the HTTP API: status polling at a target rate, job submission, and pickup delay.

    python bench/api_load.py                      # starts PostgreSQL-backed API + Celery worker
    python bench/api_load.py --embedded           # starts `lethe serve` on the embedded defaults
    python bench/api_load.py --url http://host:8000   # an already running service

Prints p50/p99 latency and throughput for each phase, and the delay from submitting a job to a
worker starting it (`started_at - created_at`, read back from the API). Goals (issue 3): polling
p99 < 50 ms at 200 requests/s on PostgreSQL; pickup < 1 s. Prints numbers; asserts nothing.
Every phase is bounded in time. Needs PostgreSQL and Redis on loopback when it starts its own
stack (LETHE_TEST_POSTGRES_URL / LETHE_TEST_REDIS_URL override the defaults). A stack of its own
gets a random bootstrap key; with --url, set LETHE_API_KEY to a key with the read and submit scopes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("LETHE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
API_KEY = os.environ.get("LETHE_API_KEY") or f"lethe-bench-{uuid.uuid4().hex}"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


# ------------------------------------------------------------------ statistics
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def report(name: str, latencies: list[float], errors: int, seconds: float) -> None:
    ms = [v * 1000 for v in latencies]
    print(
        f"{name:28s} n={len(ms):5d}  errors={errors:3d}  p50={percentile(ms, 50):7.1f} ms  "
        f"p99={percentile(ms, 99):7.1f} ms  max={max(ms, default=float('nan')):7.1f} ms  "
        f"throughput={len(ms) / seconds:7.1f} req/s",
        flush=True,
    )


# ------------------------------------------------------------------ a stack of our own
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    sys.exit(f"server not ready after {timeout} s:\n{log.read_text()[-2000:]}")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"lethe_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    import redis

    marker = uuid.uuid4().hex
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        if client.set("lethe-test-owner", marker, nx=True, ex=3600) and client.dbsize() == 1:
            break
    else:
        sys.exit(f"no free Redis database at {REDIS}")
    try:
        yield f"{REDIS}/{number}"
    finally:
        client.flushdb()


@contextlib.contextmanager
def own_stack(embedded: bool) -> Iterator[str]:
    """Start `lethe serve` (and, unless embedded, a Celery worker on PostgreSQL + Redis)."""
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        env = {
            "LETHE_DATA_DIR": str(folder / "data"),
            "LETHE_LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            "LETHE_STORAGE": "local",
            "LETHE_STORAGE_DIR": str(folder / "storage"),
            "LETHE_DATABASE_URL": "",
            "LETHE_BROKER_URL": "",
            "LETHE_HEARTBEAT_S": "0.5",
            "LETHE_BOOTSTRAP_KEY": API_KEY,
        }
        procs = []
        if not embedded:
            env["LETHE_DATABASE_URL"] = stack.enter_context(postgres_database())
            env["LETHE_BROKER_URL"] = stack.enter_context(redis_database())
            subprocess.run(
                [sys.executable, "-m", "lethe", "db", "upgrade"],
                env={**os.environ, **env},
                check=True,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            procs.append(
                _spawn(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "lethe.worker.celery_app",
                        "worker",
                        "-Q",
                        "cpu",
                        "--concurrency",
                        "1",
                        "--loglevel",
                        "WARNING",
                        "--without-gossip",
                        "--without-mingle",
                        "-n",
                        f"bench-{uuid.uuid4().hex[:6]}@%h",
                    ],
                    env,
                    folder / "worker.log",
                )
            )
        port = _free_port()
        api = _spawn(
            [sys.executable, "-m", "lethe", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env,
            folder / "api.log",
        )
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, api, folder / "api.log")
            yield url
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


# ------------------------------------------------------------------ phases
def tiny_spec(client: httpx.Client, steps: int) -> dict[str, Any]:
    refs = {}
    for name in ("tiny_forget.jsonl", "tiny_normal.jsonl"):
        with open(ROOT / "examples" / "data" / name, "rb") as f:
            r = client.post("/v1/datasets", files={"file": (name, f)}, data={"schema": "pairs"})
            r.raise_for_status()
            refs[name] = r.json()["reference"]
    return {
        "name": "bench",
        "model": {"name": "tiny-llama", "device": "cpu"},
        "lora": {"rank": 4, "alpha": 8},
        "format": {"max_length": 96},
        "unlearn": {
            "method": "yao",
            "forget": {"source": refs["tiny_forget.jsonl"]},
            "normal": {"source": refs["tiny_normal.jsonl"]},
            "train": {"lr": 0.005, "steps": steps, "batch_size": 2},
        },
        "eval": {"max_examples": 1, "generation": {"max_new_tokens": 2}},
    }


async def poll_phase(url: str, job_ids: list[str], rate: float, seconds: float, clients: int) -> None:
    """Open loop: one GET /v1/jobs/{id} every 1/rate s, whatever the previous ones are doing."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10, headers=HEADERS) as client:

        async def one(job_id: str) -> None:
            nonlocal errors
            began = time.perf_counter()
            try:
                r = await client.get(f"/v1/jobs/{job_id}")
                if r.status_code != 200:
                    errors += 1
                    return
            except httpx.HTTPError:
                errors += 1
                return
            latencies.append(time.perf_counter() - began)

        start, tasks = time.perf_counter(), []
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(job_ids[i % len(job_ids)])))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        report(f"poll GET /v1/jobs/{{id}} @{rate:.0f}/s", latencies, errors, time.perf_counter() - start)


def submit_phase(client: httpx.Client, spec: dict[str, Any], count: int) -> list[str]:
    """POST jobs one after another, cancelling each at once (queued jobs cancel immediately)."""
    latencies, ids, start = [], [], time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        r = client.post("/v1/jobs", json=spec)
        latencies.append(time.perf_counter() - began)
        if r.status_code == 201:
            ids.append(r.json()["id"])
            client.post(f"/v1/jobs/{ids[-1]}/cancel")
    report("submit POST /v1/jobs", latencies, count - len(ids), time.perf_counter() - start)
    return ids


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pickup_phase(client: httpx.Client, spec: dict[str, Any], count: int, deadline_s: float) -> None:
    """Submit to an idle worker, wait until it runs, cancel; the delay is started_at - created_at."""
    delays = []
    for _ in range(count):
        job = client.post("/v1/jobs", json=spec).json()
        end = time.monotonic() + deadline_s
        while job["status"] == "queued" and time.monotonic() < end:
            time.sleep(0.05)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        if job.get("started_at"):
            delays.append((_stamp(job["started_at"]) - _stamp(job["created_at"])).total_seconds())
        client.post(f"/v1/jobs/{job['id']}/cancel")
        while job["status"] not in ("cancelled", "succeeded", "failed") and time.monotonic() < end + 30:
            time.sleep(0.1)
            job = client.get(f"/v1/jobs/{job['id']}").json()
    ms = [d * 1000 for d in delays]
    print(
        f"{'pickup (submit -> running)':28s} n={len(ms):5d}  missed={count - len(ms):2d}  "
        f"p50={percentile(ms, 50):7.1f} ms  max={max(ms, default=float('nan')):7.1f} ms  "
        f"mean={statistics.mean(ms) if ms else float('nan'):7.1f} ms",
        flush=True,
    )


def server_side(url: str, route: str) -> None:
    """The API's own view (its latency histogram): tells server time from client overhead."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if (
                sample.name.endswith("_bucket")
                and sample.labels.get("route") == route
                and sample.labels.get("method") == "GET"
            ):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0) + sample.value
    if not buckets:
        return
    total = max(buckets.values())
    p50 = min(le for le, n in buckets.items() if n >= 0.5 * total)
    p99 = min(le for le, n in buckets.items() if n >= 0.99 * total)
    print(
        f"{'  server side (histogram)':28s} n={int(total):5d}  p50 <= {p50 * 1000:.0f} ms  "
        f"p99 <= {p99 * 1000:.0f} ms",
        flush=True,
    )


def run(url: str, args: argparse.Namespace) -> None:
    with httpx.Client(base_url=url, timeout=30, headers=HEADERS) as client:
        spec = tiny_spec(client, steps=10_000)  # long: pickups are cancelled as soon as they run
        print(f"service {url}", flush=True)
        pickup_phase(client, spec, args.pickups, deadline_s=60)
        ids = submit_phase(client, spec, args.submissions)
    asyncio.run(poll_phase(url, ids, args.rate, args.duration, args.clients))
    server_side(url, "/v1/jobs/{job_id}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--embedded", action="store_true", help="start the embedded defaults (SQLite)")
    parser.add_argument("--rate", type=float, default=200, help="polling requests per second (200)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of polling (10)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--submissions", type=int, default=50, help="jobs submitted (50)")
    parser.add_argument("--pickups", type=int, default=5, help="jobs whose pickup delay is measured (5)")
    args = parser.parse_args()
    if args.url:
        run(args.url, args)
        return 0
    with own_stack(args.embedded) as url:
        print(
            "stack: "
            + (
                "embedded (SQLite, in-process worker)"
                if args.embedded
                else "PostgreSQL + Redis + Celery worker"
            ),
            flush=True,
        )
        run(url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
