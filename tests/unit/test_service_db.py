"""Migrations on SQLite: they build exactly the models' schema, and an unmigrated DB is refused."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lethe.cli.service import main
from lethe.service.infra import db, migrate
from lethe.service.infra.settings import Settings


def test_upgrade_builds_the_models_schema(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    migrate.upgrade(settings)
    engine = db.make_engine(settings)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.Base.metadata) == []
    migrate.require_migrated(settings, engine)
    engine.dispose()


def test_unmigrated_database_is_refused_with_what_to_run(tmp_path: Path) -> None:
    from lethe.cli.wiring import build_app

    with pytest.raises(migrate.NotMigrated, match=r"database is not migrated: run 'lethe db upgrade'"):
        build_app(Settings(data_dir=tmp_path))


def test_serve_refuses_an_unmigrated_server_database(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    # not embedded (a broker is set), so serve must not migrate on its own
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LETHE_BROKER_URL", "redis://127.0.0.1:1/0")
    assert main(["serve", "--port", "1"]) == 2
    assert "run 'lethe db upgrade'" in capsys.readouterr().err


def test_db_upgrade_command_works_from_any_folder(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no alembic.ini here: the package configures Alembic itself
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "current"]) == 0
    out = capsys.readouterr().out
    database, code = re.search(r"database: (\S+)  code: (\S+)", out).groups()  # type: ignore[union-attr]
    assert database == code
    assert os.path.exists(tmp_path / "data" / "lethe.db")


def test_timestamps_round_trip_as_utc(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    migrate.upgrade(settings)
    engine = db.make_engine(settings)
    sessions = db.make_sessionmaker(engine)
    with db.transaction(sessions) as session:
        job = db.Job(name="j", tenant="t", spec={}, queue="cpu")
        session.add(job)
    with sessions() as session:
        stored = session.get(db.Job, job.id)
        assert stored.created_at == job.created_at and stored.created_at.utcoffset().total_seconds() == 0
    engine.dispose()


def test_worker_needs_a_broker(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LETHE_BROKER_URL", raising=False)
    assert main(["worker", "--queues", "cpu"]) == 2
    assert "LETHE_BROKER_URL is not set" in capsys.readouterr().err


def test_the_lethe_command_has_the_service_verbs(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from lethe.cli.main import main as lethe

    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path))
    assert lethe(["db", "upgrade"]) == 0
    assert (tmp_path / "lethe.db").exists()
