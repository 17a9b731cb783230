"""A service of real processes whose parts the fault-injection suite kills and restarts
(loaded by tests/integration/test_faults.py with `pytest_plugins = ["faultstack"]`).

It owns everything it breaks: a PostgreSQL database of its own (the other stacks' reconcilers
never see its jobs), a `redis-server` on a free loopback port (restarted without persistence, so
a restart loses every message, as a crashed Redis would; or saved and restarted with its data, as
one with persistence would), Celery worker processes in their own
process groups (SIGKILLed whole, or only their pool child), and `lethe serve`. Workers share one
work folder, as workers of one machine do (`fault_stack`), or each has its own, as workers of
different machines do (`fault_stack_apart`: they share only the database, broker and storage, so a
job taken over resumes from the checkpoint in storage).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from stackbase import free_port, throwaway_database, unavailable

KEY = f"lethe-faults-{uuid.uuid4().hex}"
TIMINGS = {
    "LETHE_HEARTBEAT_S": "0.2",
    "LETHE_PROGRESS_INTERVAL_S": "0.2",
    "LETHE_JOB_LEASE_S": "3",
    "LETHE_MAINTENANCE_INTERVAL_S": "0.5",
    "LETHE_MAX_ATTEMPTS": "5",
    "LETHE_TENANT_MAX_RUNNING": "4",
    "LETHE_QUOTA_RETRY_AFTER_S": "1",
}


def wait_until(check: object, timeout: float, what: str, logs: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


def worker_command(name: str, *extra: str) -> list[str]:
    """A real Celery worker of the `cpu` queue, one job at a time (the integration stacks' worker)."""
    return [
        sys.executable, "-m", "celery", "-A", "lethe.worker.celery_app", "worker", "-Q", "cpu",
        "--concurrency", "1", "--loglevel", "INFO", "-n", name, "--without-gossip", "--without-mingle",
        *extra,
    ]  # fmt: skip


@dataclass
class FaultStack:
    folder: Path
    env: dict[str, str]
    database_url: str
    redis_port: int
    api_url: str = ""
    api: subprocess.Popen | None = None
    redis: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    worker_logs: dict[int, Path] = field(default_factory=dict)  # worker pid -> its log
    cancelled: set[str] = field(default_factory=set)  # jobs a test cancelled on purpose
    shared_work: bool = True  # False: each worker gets a work folder of its own
    work_dirs: dict[int, Path] = field(default_factory=dict)  # worker pid -> its work folder

    # ---------------------------------------------------------------- processes
    def _spawn(self, cmd: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(self.folder / log, "ab")  # noqa: SIM115 - the process writes to it until it ends
        return subprocess.Popen(
            cmd,
            env={**os.environ, **self.env, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_redis(self, *, keep_data: bool = False) -> None:
        """Start Redis; with `keep_data` it loads what `save_and_kill_redis` saved (as a Redis
        with persistence would after a crash), else it starts empty."""
        if not keep_data:
            (self.folder / "dump.rdb").unlink(missing_ok=True)
        self.redis = self._spawn(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            "redis.log",
        )
        wait_until(self._redis_up, 20, "redis-server", self.logs())

    def _redis_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def save_and_kill_redis(self) -> None:
        """SAVE (a snapshot of every list and the unacked hash), then SIGKILL Redis."""
        assert self.redis is not None
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=5) as s:
            s.sendall(b"SAVE\r\n")
            assert s.recv(16).startswith(b"+OK")
        self.redis.kill()
        self.redis.wait()
        self.count("redis saved and killed")

    def restart_redis(self) -> None:
        """SIGKILL Redis and start it again: without persistence every message is gone."""
        assert self.redis is not None
        self.redis.kill()
        self.redis.wait()
        self.count("redis restarted")
        self.start_redis()

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        name = f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}"
        log = f"worker-{name}.log"
        work = Path(self.env["LETHE_WORK_DIR"]) if self.shared_work else self.folder / name / "work"
        proc = self._spawn(
            worker_command(f"{name}@%h", "--without-heartbeat"),
            log,
            {"LETHE_DATA_DIR": str(self.folder / name), "LETHE_WORK_DIR": str(work), **(env or {})},
        )
        self.worker_logs[proc.pid] = self.folder / log
        self.work_dirs[proc.pid] = work
        ready = lambda: "ready." in (self.folder / log).read_text(errors="replace")  # noqa: E731
        wait_until(lambda: ready() or proc.poll() is not None, 90, f"worker {name}", self.logs())
        assert proc.poll() is None, self.logs()
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen, *, child_only: bool = False) -> None:
        """SIGKILL a worker's whole process group, or only its pool child (the one running the job)."""
        if child_only:
            found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            children = found.stdout.split()
            assert children, "the worker has no pool process"
            for pid in children:
                os.kill(int(pid), signal.SIGKILL)
            self.count("worker pool process SIGKILLed")
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.workers.remove(proc)
        self.count("worker SIGKILLed")

    def signal_worker(self, proc: subprocess.Popen, sig: signal.Signals) -> None:
        """Send `sig` to a worker's whole process group, as systemd and Docker do (SIGTERM), or
        stop and continue it (SIGSTOP, SIGCONT: a machine swapped out, a paused container)."""
        os.killpg(proc.pid, sig)
        self.count(f"worker {sig.name}")

    def worker_log(self, proc: subprocess.Popen) -> str:
        return self.worker_logs[proc.pid].read_text(errors="replace")

    def start_api(self) -> None:
        """Start `lethe serve`; a restarted API listens on the same port as before."""
        port = int(self.api_url.rsplit(":", 1)[1]) if self.api_url else free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.api = self._spawn(
            [sys.executable, "-m", "lethe", "serve", "--host", "127.0.0.1", "--port", str(port)],
            "api.log",
            {"LETHE_DATA_DIR": str(self.folder / "api")},
        )
        wait_until(self._api_ready, 90, "the API", self.logs())

    def _api_ready(self) -> bool:
        assert self.api is not None
        if self.api.poll() is not None:
            raise AssertionError(f"the API exited:\n{self.logs()}")
        try:
            return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill_api(self) -> None:
        assert self.api is not None
        os.killpg(self.api.pid, signal.SIGKILL)
        self.api.wait()
        self.count("API SIGKILLed")

    def stop_all(self) -> None:
        for proc in [*self.workers, self.api, self.redis]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.api, self.redis]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # ---------------------------------------------------------------- helpers
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30, headers={"Authorization": f"Bearer {KEY}"})

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted(self.folder.glob("*.log"))
        )


def first_steps_after_takeover(log: list[Any]) -> list[int]:
    """The first training step that each attempt after the first reported (where it resumed)."""
    starts, attempt, seen = [], 0, False
    for event in log:
        if event.kind == "status" and event.payload.get("status") == "running":
            attempt, seen = event.payload["attempt"], False
        elif event.kind == "progress" and attempt > 1 and not seen and event.payload["stage"] == "unlearn":
            starts.append(event.payload["step"])
            seen = True
    return starts


@pytest.fixture(scope="module")
def fault_db() -> Iterator[str]:
    with throwaway_database("lethe_faults") as url:
        yield url


@pytest.fixture(scope="module")
def fault_stack(fault_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with running_stack(fault_db, tmp_path_factory.mktemp("faults"), shared_work=True) as stack:
        yield stack


@pytest.fixture(scope="module")
def fault_stack_apart(fault_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """Two workers that share no folder: as if on two machines."""
    with running_stack(fault_db, tmp_path_factory.mktemp("apart"), shared_work=False) as stack:
        stack.start_worker()
        yield stack


@contextmanager
def running_stack(fault_db: str, folder: Path, *, shared_work: bool) -> Iterator[FaultStack]:
    from lethe.service.infra import migrate
    from lethe.service.infra.settings import Settings

    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed: the fault suite starts a Redis of its own")
    port = free_port()
    env = {
        **TIMINGS,
        "LETHE_DATABASE_URL": fault_db,
        "LETHE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "LETHE_STORAGE": "local",
        "LETHE_STORAGE_DIR": str(folder / "storage"),
        "LETHE_WORK_DIR": str(folder / "work"),
        "LETHE_BOOTSTRAP_KEY": KEY,
        "LETHE_LOG_LEVEL": "info",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    migrate.upgrade(Settings(database_url=fault_db, data_dir=folder))
    stack = FaultStack(folder, env, fault_db, port, shared_work=shared_work)
    try:
        stack.start_redis()
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.stop_all()
