"""Real processes for the integration tests: PostgreSQL, Redis, a Celery worker, `lethe serve`.

Each test session creates its own PostgreSQL database (`lethe_test_<random>`, dropped at the end)
and takes a free Redis database number, so parallel sessions on one machine do not meet. When
PostgreSQL or Redis is unreachable the tests fail under CI=true and are skipped otherwise.
Override the servers with LETHE_TEST_POSTGRES_URL and LETHE_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from faultstack import worker_command
from stackbase import free_port, throwaway_database, unavailable

REDIS = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
S3_BUCKET = "lethe-it"
ADMIN_KEY = f"lethe-it-{uuid.uuid4().hex}"  # the stacks' LETHE_BOOTSTRAP_KEY (tenant `default`)
FAST = {
    "LETHE_BOOTSTRAP_KEY": ADMIN_KEY,
    "LETHE_HEARTBEAT_S": "0.2",
    "LETHE_PROGRESS_INTERVAL_S": "0.2",
    "LETHE_LOG_LEVEL": "info",
    "HF_HUB_OFFLINE": "1",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with throwaway_database("lethe_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    import redis

    marker = f"lethe-test-{uuid.uuid4().hex}"
    for number in range(15, 0, -1):  # a database no other session holds (db 0 is left alone)
        client = redis.Redis.from_url(f"{REDIS}/{number}", socket_timeout=3)
        try:
            if client.set("lethe-test-owner", marker, nx=True, ex=3600) and client.dbsize() == 1:
                break
        except redis.RedisError as err:
            unavailable(f"Redis unreachable at {REDIS}: {err}")
    else:
        unavailable(f"no free Redis database at {REDIS}")
    yield f"{REDIS}/{number}"
    client.flushdb()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


@dataclass
class Stack:
    """A running service: its URL, the environment its processes share, and its database URL."""

    url: str
    env: dict[str, str]
    database_url: str
    logs: list[Path]

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {key}"})


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - the process writes to it until it ends
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def wait_for_line(proc: subprocess.Popen, log: Path, needle: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"no {needle!r} after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(env: dict[str, str], folder: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = folder / "api.log"
    proc = start(
        [sys.executable, "-m", "lethe", "serve", "--host", "127.0.0.1", "--port", str(port)], env, log
    )
    return proc, f"http://127.0.0.1:{port}", log


@contextmanager
def worker_and_api(env: dict[str, str], folder: Path, name: str) -> Iterator[tuple[str, list[Path]]]:
    """A Celery worker (its own data folder) and `lethe serve` on `env`, both ready; yields the
    API's URL and both logs, and stops both on exit."""
    worker_log = folder / "worker.log"
    worker = start(
        worker_command(f"{name}-{uuid.uuid4().hex[:8]}@%h"),
        {**env, "LETHE_DATA_DIR": str(folder / "worker")},
        worker_log,
    )
    api, url, api_log = serve(env, folder)
    try:
        wait_for_line(worker, worker_log, "ready.")
        wait_ready(url, api, api_log)
        yield url, [api_log, worker_log]
    finally:
        stop(api, worker)


@pytest.fixture(scope="session")
def celery_stack(
    postgres_url: str, redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Production shape: PostgreSQL + Redis + S3 (moto) + a Celery worker process + the API."""
    from lethe.service.infra import migrate
    from lethe.service.infra.settings import Settings

    folder = tmp_path_factory.mktemp("celery-stack")
    env = {
        **FAST,
        "LETHE_DATABASE_URL": postgres_url,
        "LETHE_BROKER_URL": redis_url,
        "LETHE_STORAGE": "s3",
        "LETHE_S3_ENDPOINT_URL": s3_endpoint,
        "LETHE_S3_BUCKET": S3_BUCKET,
        "LETHE_DATA_DIR": str(folder / "api"),
    }
    migrate.upgrade(Settings(database_url=postgres_url, data_dir=folder))
    with worker_and_api(env, folder, "it") as (url, logs):
        yield Stack(url, env, postgres_url, logs)


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`lethe serve` with nothing configured but LETHE_DATA_DIR: SQLite, local storage, a thread."""
    folder = tmp_path_factory.mktemp("embedded-stack")
    env = {**FAST, "LETHE_DATA_DIR": str(folder / "data")}
    # whatever the caller's shell says, this stack is the embedded default
    env.update(LETHE_DATABASE_URL="", LETHE_BROKER_URL="", LETHE_STORAGE="local")
    api, url, log = serve(env, folder)
    try:
        wait_ready(url, api, log)
        yield Stack(url, env, f"sqlite:///{folder / 'data' / 'lethe.db'}", [log])
    finally:
        stop(api)


@pytest.fixture(params=["celery", "embedded"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")
