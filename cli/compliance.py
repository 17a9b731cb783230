"""`lethe audit verify` (the hash chain of the audit log) and `lethe signing-key` (the public
key that signs certificates), against the database and data folder the settings name."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lethe.service.infra.settings import Settings


def add_compliance_commands(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="the audit log")
    verbs = audit.add_subparsers(dest="audit_command", required=True, metavar="{verify}")
    verify = verbs.add_parser(
        "verify", help="check the audit log's hash chain: exit 1 if a line was edited or deleted"
    )
    verify.add_argument(
        "--file", help="check an exported JSONL file (GET /v1/audit?format=jsonl) instead of the database"
    )
    verify.set_defaults(handler=cmd_audit_verify)
    key = subparsers.add_parser(
        "signing-key",
        help="print the public key that signs certificates (created under LETHE_DATA_DIR on first use)",
    )
    key.add_argument("--pem", action="store_true", help="print the PEM public key only")
    key.set_defaults(handler=cmd_signing_key)


def _read_export(path: Path) -> list[dict]:
    lines = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not JSON ({err.msg}): the file was damaged") from None
    return lines


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from lethe.service.trust.audit import verify_database, verify_lines

    if args.file:
        try:
            report = verify_lines(_read_export(Path(args.file)), partial=True)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        scope = f"{args.file} (lines that follow each other are linked; an export of one tenant has gaps)"
    else:
        from lethe.service.infra.migrate import NotMigrated, upgrade
        from lethe.service.infra.runtime import build_runtime

        settings = Settings()
        try:
            if settings.embedded:  # the SQLite file of `lethe serve`: up to date, as serve makes it
                upgrade(settings)
            rt = build_runtime(settings)
        except NotMigrated as err:
            print(f"lethe audit verify: {err}", file=sys.stderr)
            return 2
        try:
            report = verify_database(rt.sessions)
        finally:
            rt.close()
        scope = "the database, up to its head"
    for problem in report.problems:
        print(f"FAILED: {problem}")
    if not report.ok:
        return 1
    print(
        f"OK: {report.checked} audit lines verified in {scope}; last line {report.last_seq}, "
        f"hash {report.last_hash}"
    )
    return 0


def cmd_signing_key(args: argparse.Namespace) -> int:
    from lethe.evidence.certificate import key_id, public_key_pem
    from lethe.service.trust.certificates import load_signing_key

    settings = Settings()
    public = load_signing_key(settings).public_key()
    if args.pem:
        print(public_key_pem(public), end="")
        return 0
    print(
        f"key file: {settings.signing_key_path}\nkey id:   {key_id(public)}\n{public_key_pem(public)}", end=""
    )
    return 0
