"""`lethe keys create | revoke | list`: API keys, against the database the settings name.

With the embedded defaults (SQLite under LETHE_DATA_DIR) the database is migrated first, as
`lethe serve` does; a server database must already be migrated (`lethe db upgrade`).
`create` prints the new key alone on its last line, so `lethe keys create ... | tail -n1` is it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from lethe.service.infra.errors import ServiceError
from lethe.service.infra.settings import Settings

if TYPE_CHECKING:
    from lethe.service.infra.runtime import Runtime


def add_key_commands(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="API keys: create, revoke, list")
    verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="{create,revoke,list}")
    create = verbs.add_parser("create", help="create a key; prints it once, alone on the last line")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for, e.g. acme")
    create.add_argument(
        "--scopes", default="read,submit", help="comma-separated: read, submit, admin (default read,submit)"
    )
    create.add_argument("--name", default="", help="a label to recognise the key by")
    create.set_defaults(handler=cmd_keys_create)
    revoke = verbs.add_parser("revoke", help="revoke a key by its id (requests with it get 401)")
    revoke.add_argument("key_id", help="the id `lethe keys list` shows")
    revoke.set_defaults(handler=cmd_keys_revoke)
    listing = verbs.add_parser("list", help="list keys (ids, tenants, scopes; never the keys)")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    listing.set_defaults(handler=cmd_keys_list)


def _runtime() -> Runtime:
    from lethe.service.infra.migrate import upgrade
    from lethe.service.infra.runtime import build_runtime

    settings = Settings()
    if settings.embedded:  # the SQLite file of `lethe serve`: bring it up to date as serve would
        upgrade(settings)
    return build_runtime(settings)


def _run(verb: str, action: Callable[[Runtime], None]) -> int:
    from lethe.service.infra.migrate import NotMigrated

    try:
        rt = _runtime()
    except NotMigrated as err:
        print(f"lethe keys {verb}: {err}", file=sys.stderr)
        return 2
    try:
        action(rt)
    except ServiceError as err:
        print(f"lethe keys {verb}: {err.message}", file=sys.stderr)
        return 1
    finally:
        rt.close()
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from lethe.service.trust.auth import create_key

    def action(rt: Runtime) -> None:
        row, key = create_key(rt.sessions, args.tenant, args.scopes, args.name)
        print(f"created key {row.id} for tenant {row.tenant} with scopes {row.scopes}")
        print("it is shown only this once: store it now, and send it as 'Authorization: Bearer KEY'")
        print(key)

    return _run("create", action)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from lethe.service.trust.auth import revoke_key

    def action(rt: Runtime) -> None:
        row = revoke_key(rt.sessions, args.key_id)
        print(f"revoked key {row.id} (tenant {row.tenant}); requests with it now get 401")

    return _run("revoke", action)


def cmd_keys_list(args: argparse.Namespace) -> int:
    from lethe.service.trust.auth import list_keys

    def action(rt: Runtime) -> None:
        with rt.sessions() as session:
            rows = list_keys(session, args.tenant)
        print(f"{'id':<16}  {'tenant':<20}  {'scopes':<18}  {'state':<8}  created            name")
        for row in rows:
            state = "revoked" if row.revoked_at else "active"
            print(
                f"{row.id:<16}  {row.tenant:<20}  {row.scopes:<18}  {state:<8}  "
                f"{row.created_at:%Y-%m-%d %H:%M}   {row.name}"
            )

    return _run("list", action)
