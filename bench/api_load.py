"""Load on the HTTP API: status polling at a target rate, job submission, and pickup delay.

    python bench/api_load.py                      # starts PostgreSQL-backed API + Celery worker
    python bench/api_load.py --embedded           # starts `lethe serve` on the embedded defaults
    python bench/api_load.py --url http://host:8000   # an already running service

Prints p50/p99 latency and throughput for each phase, and the delay from submitting a job to a
worker starting it (`started_at - created_at`, read back from the API). Polling runs while a job
trains, paced (`--rate`, open loop) and then with `--inflight` requests always outstanding
(closed loop). Goals (issues 3 and 14): polling p99 < 50 ms at 200 requests/s on PostgreSQL;
with 200 in flight, throughput at least the paced rate; pickup < 1 s. Prints numbers; asserts
nothing.
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
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from faultstack import worker_command  # noqa: E402 - the integration stacks' worker, one job at a time

PG_ADMIN = os.environ.get("LETHE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
API_KEY = os.environ.get("LETHE_API_KEY") or f"lethe-bench-{uuid.uuid4().hex}"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


# ------------------------------------------------------------------ statistics
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


SERVER_PID: list[int] = []  # the API process of a stack of our own (its CPU time is read from /proc)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by (the API process, this client): per request, they compare
    runs on a machine whose other load changes, where latencies do not."""
    server = float("nan")
    if SERVER_PID:
        fields = Path(f"/proc/{SERVER_PID[0]}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return server, time.process_time()


def report_cpu(before: tuple[float, float], requests: int) -> None:
    after = cpu_seconds()
    server, client = ((a - b) * 1000 / max(requests, 1) for a, b in zip(after, before, strict=True))
    print(f"{'  CPU per request':28s} server {server:5.2f} ms  client {client:5.2f} ms", flush=True)


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
            name = f"bench-{uuid.uuid4().hex[:6]}@%h"
            procs.append(_spawn(worker_command(name, "--loglevel", "WARNING"), env, folder / "worker.log"))
        port = _free_port()
        api = _spawn(
            [sys.executable, "-m", "lethe", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env,
            folder / "api.log",
        )
        procs.append(api)
        SERVER_PID[:] = [api.pid]
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


class RawClient:
    """GET over kept-alive HTTP/1.1 connections with asyncio streams, for the polling phases:
    httpx's async client takes 3-5 ms of CPU per request (measured here), more than the server,
    so on a small machine it measured itself. One request at a time per connection."""

    def __init__(self, url: str, connections: int) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.room = asyncio.Semaphore(connections)
        self.auth = HEADERS["Authorization"]

    async def get(self, path: str) -> int:
        """The answer's status (the body is read and dropped); raises OSError on a cut connection."""
        async with self.room:
            reader, writer = (
                self.idle.get_nowait()
                if not self.idle.empty()
                else await asyncio.open_connection(self.host, self.port)
            )
            request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {self.auth}\r\n\r\n"
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            self.idle.put_nowait((reader, writer))
            return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()


async def poll_phase(url: str, job_ids: list[str], rate: float, seconds: float, clients: int) -> None:
    """Open loop: one GET /v1/jobs/{id} every 1/rate s, whatever the previous ones are doing."""
    latencies: list[float] = []
    errors = 0
    client = RawClient(url, clients)
    try:

        async def one(job_id: str) -> None:
            nonlocal errors
            began = time.perf_counter()
            try:
                if await client.get(f"/v1/jobs/{job_id}") != 200:
                    errors += 1
                    return
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append(time.perf_counter() - began)

        start, tasks, cpu = time.perf_counter(), [], cpu_seconds()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(job_ids[i % len(job_ids)])))
        _, late = await asyncio.wait(tasks, timeout=30)
        for task in late:  # still unanswered 30 s after the last was sent: counted as errors
            task.cancel()
        errors += len(late)
        report(f"poll GET /v1/jobs/{{id}} @{rate:.0f}/s", latencies, errors, time.perf_counter() - start)
        report_cpu(cpu, len(tasks))
    finally:
        client.close()


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


async def inflight_phase(url: str, job_ids: list[str], inflight: int, seconds: float) -> None:
    """Closed loop: `inflight` requests always outstanding (each client sends its next request
    when its answer came); throughput should not fall below the paced rate."""
    latencies: list[float] = []
    errors = 0
    client = RawClient(url, inflight)
    try:
        end = time.perf_counter() + seconds

        async def loop(n: int) -> None:
            nonlocal errors
            while time.perf_counter() < end:
                began = time.perf_counter()
                try:
                    ok = await client.get(f"/v1/jobs/{job_ids[n % len(job_ids)]}") == 200
                except (OSError, asyncio.IncompleteReadError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
                n += inflight

        start, cpu = time.perf_counter(), cpu_seconds()
        loops = [asyncio.create_task(loop(i)) for i in range(inflight)]
        _, late = await asyncio.wait(loops, timeout=seconds + 60)
        for task in late:
            task.cancel()
        report(f"in flight GET /v1/jobs/{{id}} x{inflight}", latencies, errors, time.perf_counter() - start)
        report_cpu(cpu, len(latencies) + errors)
    finally:
        client.close()


def training_job(client: httpx.Client, spec: dict[str, Any]) -> str:
    """A job left training while the polling phases run (the issue's setting: the API shares the
    CPU with a worker that is training)."""
    job = client.post("/v1/jobs", json=spec).json()
    end = time.monotonic() + 120
    while job["status"] == "queued" and time.monotonic() < end:
        time.sleep(0.2)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    print(f"{'training during polling':28s} job {job['id']} {job['status']}", flush=True)
    return str(job["id"])


def run(url: str, args: argparse.Namespace) -> None:
    with httpx.Client(base_url=url, timeout=30, headers=HEADERS) as client:
        spec = tiny_spec(client, steps=10_000)  # long: pickups are cancelled as soon as they run
        print(f"service {url}", flush=True)
        pickup_phase(client, spec, args.pickups, deadline_s=60)
        ids = submit_phase(client, spec, args.submissions)
        training = training_job(client, spec)
        try:
            asyncio.run(poll_phase(url, [training, *ids], args.rate, args.duration, args.clients))
            server_side(url, "/v1/jobs/{job_id}")
            if args.inflight:
                asyncio.run(inflight_phase(url, [training, *ids], args.inflight, args.duration))
        finally:
            client.post(f"/v1/jobs/{training}/cancel")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="benchmark a running service instead of starting one")
    parser.add_argument("--embedded", action="store_true", help="start the embedded defaults (SQLite)")
    parser.add_argument("--rate", type=float, default=200, help="polling requests per second (200)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of polling (10)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--submissions", type=int, default=50, help="jobs submitted (50)")
    parser.add_argument("--pickups", type=int, default=5, help="jobs whose pickup delay is measured (5)")
    parser.add_argument(
        "--inflight",
        type=int,
        default=200,
        help="requests kept in flight in the closed-loop phase (200; 0: skip)",
    )
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
