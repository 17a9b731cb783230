"""CLI verbs of the service: `lethe serve`, `lethe db upgrade`, `lethe worker`, `lethe keys`.

`add_service_commands(subparsers)` adds them to the main CLI's subparsers; each sets
`handler(args) -> int`, the exit code. Settings come from the environment (`LETHE_*`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from lethe.service.infra.settings import Settings


def add_service_commands(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP API (embedded defaults: SQLite, local "
        "storage and an in-process worker under LETHE_DATA_DIR)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.set_defaults(handler=cmd_serve)

    db = subparsers.add_parser("db", help="database migrations")
    db_verbs = db.add_subparsers(dest="db_command", required=True, metavar="{upgrade,current}")
    upgrade = db_verbs.add_parser("upgrade", help="migrate the database of the settings to the latest schema")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    db_verbs.add_parser("current", help="print the database's revision and the code's").set_defaults(
        handler=cmd_db_current
    )

    worker = subparsers.add_parser("worker", help="run a Celery worker (needs LETHE_BROKER_URL)")
    worker.add_argument(
        "--queues", default=None, help="comma-separated queues, e.g. gpu or cpu (default LETHE_WORKER_QUEUES)"
    )
    worker.add_argument(
        "--concurrency", type=int, default=1, help="jobs at once (default 1: run one worker per GPU)"
    )
    worker.add_argument("--hostname", default=None, help="worker name (Celery -n), e.g. gpu0@%%h")
    worker.set_defaults(handler=cmd_worker)

    from lethe.cli.compliance import add_compliance_commands
    from lethe.cli.keys import add_key_commands

    add_key_commands(subparsers)
    add_compliance_commands(subparsers)


def _log(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from lethe.cli.wiring import build_app
    from lethe.service.infra.migrate import NotMigrated, upgrade

    settings = Settings()
    _log(settings)
    if settings.embedded:  # one process owns the SQLite file: migrating on start is safe
        upgrade(settings)
    try:
        app = build_app(settings)
    except NotMigrated as err:
        print(f"lethe serve: {err}", file=sys.stderr)
        return 2
    mode = "embedded (in-process worker)" if not settings.broker_url else f"broker {settings.broker_url}"
    print(f"lethe serve: http://{args.host}:{args.port}  data {settings.data_dir}  {mode}", flush=True)
    from lethe.service.trust.auth import active_key_count

    if not active_key_count(app.state.runtime.sessions):
        print(
            "lethe serve: no API key exists yet, so every /v1 request gets 401: create one with "
            "`lethe keys create --tenant NAME --scopes read,submit,admin`, or set LETHE_BOOTSTRAP_KEY",
            flush=True,
        )
    _serve(app, args.host, args.port, settings.log_level.lower())
    return 0


def _serve(app: Any, host: str, port: int, log_level: str) -> None:
    """uvicorn waits for every open connection before it exits, and a server-sent event stream
    stays open until its job ends (hours). On SIGTERM or SIGINT, `app.state.closing` is set
    first: the streams (api/routes/jobs.py) end at their next poll, so the server exits within
    about a second and an EventSource reconnects elsewhere with Last-Event-ID."""
    import uvicorn

    closing = threading.Event()
    app.state.closing = closing
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    handle_exit = server.handle_exit

    def close_streams_then_exit(sig: int, frame: FrameType | None) -> None:
        closing.set()
        handle_exit(sig, frame)

    server.handle_exit = close_streams_then_exit  # type: ignore[method-assign]
    server.run()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from lethe.service.infra.migrate import upgrade

    settings = Settings()
    upgrade(settings, revision=args.revision)
    print(f"database {_safe_url(settings)} is at revision {args.revision}")
    return 0


def cmd_db_current(_: argparse.Namespace) -> int:
    from lethe.service.infra.db import make_engine
    from lethe.service.infra.migrate import current_revisions, head_revisions

    settings = Settings()
    engine = make_engine(settings)
    try:
        current = sorted(current_revisions(engine)) or ["(none)"]
    finally:
        engine.dispose()
    print(f"database: {', '.join(current)}  code: {', '.join(sorted(head_revisions(settings)))}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from lethe.service.infra.migrate import NotMigrated
    from lethe.service.infra.runtime import build_runtime

    settings = Settings()
    if not settings.broker_url:
        print(
            "lethe worker: LETHE_BROKER_URL is not set: a worker needs a broker, e.g. "
            "redis://localhost:6379/0 (without one, `lethe serve` runs jobs itself)",
            file=sys.stderr,
        )
        return 2
    try:
        build_runtime(settings).close()  # refuse an unmigrated database before taking tasks
    except NotMigrated as err:
        print(f"lethe worker: {err}", file=sys.stderr)
        return 2
    from lethe.worker.celery_app import app

    queues = args.queues or ",".join(settings.worker_queues)
    argv = [
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(args.concurrency),
        "--loglevel",
        settings.log_level.upper(),
    ]
    if args.hostname:
        argv += ["-n", args.hostname]
    try:
        app.worker_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.db_url).render_as_string(hide_password=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Only these verbs (for `python -m lethe.cli.service`); `lethe` itself has them all."""
    parser = argparse.ArgumentParser(prog="lethe")
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
