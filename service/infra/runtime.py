"""The parts one process shares: settings, database, storage and the job dispatcher.

Built once by the API (`create_app`), by a Celery worker process, or by a CLI command. The
dispatcher is attached by the caller (`lethe.worker.dispatch.attach_dispatcher`), so this package
does not depend on the queue transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from lethe.service.infra import db, migrate
from lethe.service.infra.object_store import Storage, make_storage
from lethe.service.infra.settings import Settings


class Dispatcher(Protocol):
    """Hands a queued job to a worker: Celery in production, a thread in the embedded mode."""

    def dispatch(self, job_id: UUID, queue: str) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def check(self) -> None: ...
    def pending(self) -> set[UUID] | None:
        """Jobs the transport holds (for the reconciler); None if it cannot tell."""


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    dispatcher: Dispatcher | None = field(default=None)

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.engine.dispose()


def build_runtime(settings: Settings, *, check_migrated: bool = True) -> Runtime:
    """Connect to the database (refusing an unmigrated one) and open the storage backend."""
    engine = db.make_engine(settings)
    if check_migrated:
        try:
            migrate.require_migrated(settings, engine)
        except BaseException:
            engine.dispose()
            raise
    return Runtime(settings, engine, db.make_sessionmaker(engine), make_storage(settings))
