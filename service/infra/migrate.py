"""Alembic, configured in code from the installed `lethe.migrations` package.

`lethe db upgrade` works from any directory because nothing here reads an `alembic.ini` from the
current folder. The API and the workers call `require_migrated` at start and refuse to run on a
database that is not at the head revision.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from lethe.service.infra.settings import Settings

NOT_MIGRATED = "database is not migrated: run 'lethe db upgrade'"


class NotMigrated(RuntimeError):
    """The database is behind (or ahead of) this code's migrations."""


def alembic_config(url: str) -> Config:
    config = Config()
    # the installed package's folder, wherever the current directory is
    config.set_main_option("script_location", str(resources.files("lethe.migrations")))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(settings: Settings, engine: Engine | None = None, revision: str = "head") -> None:
    """Bring the database to `revision` (creating the SQLite folder first if needed)."""
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = alembic_config(settings.db_url)
    if engine is None:
        command.upgrade(config, revision)
        return
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def head_revisions(settings: Settings) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(settings.db_url)).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def require_migrated(settings: Settings, engine: Engine) -> None:
    """Raise NotMigrated with the command to run unless the database is at the head."""
    if current_revisions(engine) != head_revisions(settings):
        raise NotMigrated(NOT_MIGRATED)
