"""The one place where the shells meet: the API gets the workers' dispatcher here.

`lethe serve`, the tests and anything else that runs the API call `build_app`; the API package
itself imports neither the workers nor the command line, and the shared service layer imports
neither shell (the import contracts in pyproject.toml hold both).
"""

from __future__ import annotations

from fastapi import FastAPI

from lethe.api.app import create_app
from lethe.service.infra.runtime import Runtime, build_runtime
from lethe.service.infra.settings import Settings
from lethe.worker.dispatch import attach_dispatcher


def build_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """The API over `runtime` (built from `settings` unless given) with the dispatcher the settings
    name: Celery on the broker, or in-process worker threads; raises NotMigrated."""
    rt = runtime or build_runtime(settings or Settings())
    if rt.dispatcher is None:
        attach_dispatcher(rt)
    return create_app(rt)
