"""Fixtures for the service's unit tests (loaded with `pytest_plugins = ["service_fixtures"]`):
the embedded API on a temporary folder, with the fake engine or with jobs kept queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, RecordingDispatcher, fake_run_job, fast_settings, free_port

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate
from lethe.service.infra.runtime import Runtime, build_runtime
from lethe.service.infra.settings import Settings


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lethe.core.run.pipeline.run_job", fake_run_job)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = fast_settings(tmp_path / "lethe")
    migrate.upgrade(s)
    return s


@pytest.fixture
def client(settings: Settings, fake_engine: None) -> Iterator[TestClient]:
    """The embedded API (SQLite, local storage, in-process worker) with the fake engine."""
    with TestClient(build_app(settings), headers=AUTH) as c:
        yield c


@pytest.fixture
def queued_runtime(settings: Settings) -> Iterator[tuple[Runtime, RecordingDispatcher]]:
    rt = build_runtime(settings)
    rt.dispatcher = dispatcher = RecordingDispatcher()
    yield rt, dispatcher
    rt.close()


@pytest.fixture
def queued_client(queued_runtime: tuple[Runtime, RecordingDispatcher]) -> Iterator[TestClient]:
    """The API over a dispatcher that never runs anything: jobs stay queued."""
    with TestClient(build_app(runtime=queued_runtime[0]), headers=AUTH) as c:
        yield c


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-protocol server on loopback (moto in server mode), for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
