"""CLI verbs over the client SDK and the offline checks: `lethe jobs ...`, `lethe datasets upload`,
`lethe verify`, `lethe report`.

The server's URL and API key come from `--url` / `--api-key` or LETHE_URL / LETHE_API_KEY.
Every handler returns the exit code; a refused request is one line `error: ...` (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lethe.client.sdk import FINAL, ClientError, Job, LetheClient


def add_client_commands(sub: Any) -> None:
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--url", default=None, help="service URL (default: LETHE_URL, else http://127.0.0.1:8000)"
    )
    server.add_argument("--api-key", default=None, help="API key (default: LETHE_API_KEY)")

    jobs = sub.add_parser("jobs", help="jobs on a Lethe service").add_subparsers(
        dest="jobs_cmd", required=True
    )
    p = jobs.add_parser(
        "submit", parents=[server], help="submit a spec (its local datasets are uploaded first)"
    )
    p.add_argument("spec")
    p.add_argument(
        "--wait", action="store_true", help="follow the job to its end (exit 1 unless it succeeds)"
    )
    p.add_argument("--out", help="with --wait: download the artifacts and the certificate here")
    p.add_argument("--callback-url", help="webhook called on every state change of this job")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_submit)
    p = jobs.add_parser("status", parents=[server], help="a job's status, progress and metrics")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print the whole job as JSON")
    p.set_defaults(handler=cmd_status)
    p = jobs.add_parser("cancel", parents=[server], help="cancel a job")
    p.add_argument("job_id")
    p.set_defaults(handler=cmd_cancel)
    p = jobs.add_parser(
        "download",
        parents=[server],
        help="download a job's artifacts (SHA-256 checked) and, for a succeeded job, its certificate",
    )
    p.add_argument("job_id")
    p.add_argument("--out", required=True, help="folder to write into")
    p.set_defaults(handler=cmd_download)

    datasets = sub.add_parser("datasets", help="datasets on a Lethe service").add_subparsers(
        dest="datasets_cmd", required=True
    )
    p = datasets.add_parser("upload", parents=[server], help="upload a JSONL, CSV, Parquet or text file")
    p.add_argument("file")
    p.add_argument("--schema", default="pairs", help="pairs | prompts | pku_saferlhf | truthfulqa | book")
    p.add_argument("--format", default="auto", help="auto | jsonl | csv | parquet | text")
    p.add_argument("--columns", default="{}", help='JSON, e.g. {"prompt": "question"}')
    p.add_argument("--name", default=None)
    p.set_defaults(handler=cmd_upload)

    p = sub.add_parser("verify", help="check an unlearning certificate offline")
    p.add_argument("file")
    p.add_argument(
        "--public-key", help="the signer's public key: a PEM file, or its base64 (pins the signer)"
    )
    p.add_argument("--key-id", help="the signer's key id (SHA-256 of its public key; pins the signer)")
    p.add_argument("--adapter", help="also check that this adapter.tar.gz is the certified one")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="also check that this file is one of the certified datasets (repeatable)",
    )
    p.add_argument(
        "--openssl",
        metavar="DIR",
        help="write payload.bin, signature.bin and public_key.pem "
        "to DIR for `openssl pkeyutl -verify -rawin`",
    )
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("report", help="write the HTML report of a run folder (from the folder alone)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="file to write (default RUN_DIR/report.html)")
    p.set_defaults(handler=cmd_report)


def _client(args: argparse.Namespace) -> LetheClient:
    return LetheClient(args.url, args.api_key)


def _fail(err: ClientError) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 1


def _summary(job: Job) -> str:
    p = job.progress or {}
    line = f"{job.id}  {job.status}"
    if job.stage:
        line += f"  stage {job.stage}"
    if p.get("total"):
        line += f"  step {p.get('step')}/{p['total']}"
    if job.error:
        line += f"\nerror: {job.error}"
    return line


def cmd_submit(args: argparse.Namespace) -> int:
    from lethe.core.run.report import before_after_table

    try:
        with _client(args) as client:
            job = client.submit(args.spec, callback_url=args.callback_url)
            print(f"submitted job {job.id} ({job.status})", flush=True)
            if not args.wait:
                return 0
            job = client.wait(job.id, progress=not args.quiet)
            print(_summary(job))
            if job.status != "succeeded":
                return 1
            print(before_after_table(job.metrics or {}))
            if args.out:
                _download_all(client, job, Path(args.out))
    except ClientError as err:
        return _fail(err)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            job = client.job(args.job_id)
    except ClientError as err:
        return _fail(err)
    if args.json:
        print(json.dumps(job.raw, indent=2))
        return 0
    print(_summary(job))
    if job.metrics and job.status == "succeeded":
        from lethe.core.run.report import before_after_table

        print(before_after_table(job.metrics))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            job = client.cancel(args.job_id)
    except ClientError as err:
        return _fail(err)
    asked = " (stops at its next step)" if job.status not in FINAL else ""
    print(f"{job.id}  {job.status}{asked}")
    return 0


def _download_all(client: LetheClient, job: Job, out: Path) -> None:
    for path in client.download(job.id, out):
        print(f"downloaded {path} (SHA-256 checked)")
    if job.status == "succeeded":
        certificate = out / "certificate.json"
        client.certificate(job.id, certificate)
        print(
            f"certificate: {certificate}  (check it: lethe verify {certificate} --key-id "
            f"{client.signing_key()['key_id']})"
        )


def cmd_download(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            _download_all(client, client.job(args.job_id), Path(args.out))
    except ClientError as err:
        return _fail(err)
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    try:
        columns = json.loads(args.columns)
    except json.JSONDecodeError as err:
        print(f"error: --columns is not JSON ({err.msg})", file=sys.stderr)
        return 1
    try:
        with _client(args) as client:
            ds = client.upload_dataset(args.file, args.schema, args.format, columns, args.name)
    except ClientError as err:
        return _fail(err)
    print(f"{ds.reference}  {ds.row_count} rows  sha256 {ds.sha256}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from lethe.evidence.certificate import openssl_inputs, read_public_key, verify_file

    try:
        pinned = read_public_key(args.public_key) if args.public_key else None
    except (OSError, ValueError) as err:
        print(f"error: --public-key: {err}", file=sys.stderr)
        return 1
    result = verify_file(Path(args.file), pinned, args.key_id)
    if not result.ok:
        print(f"FAILED: {args.file}: {result.reason}")
        return 1
    problems = _check_files(result.certificate or {}, args.adapter, args.dataset)
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        return 1
    cert = result.certificate or {}
    print(f"OK: {result.reason}")
    print(
        f"job {cert.get('job', {}).get('id')} on {cert.get('base_model', {}).get('reference')}, "
        f"issued {cert.get('issued_at')}"
    )
    if args.openssl:
        files = openssl_inputs(Path(args.file).read_bytes(), Path(args.openssl))
        pem = args.public_key if args.public_key and Path(args.public_key).is_file() else files["public_key"]
        print(
            f"openssl pkeyutl -verify -pubin -inkey {pem} -rawin "
            f"-in {files['payload']} -sigfile {files['signature']}"
        )
    return 0


def _check_files(cert: dict[str, Any], adapter: str | None, datasets: list[str]) -> list[str]:
    """Problems with files the user asked to match against the certificate."""
    from lethe.client.sdk import sha256_file

    problems = []
    if adapter:
        expected = (cert.get("adapter") or {}).get("archive_sha256")
        got = sha256_file(Path(adapter)) if os.path.isfile(adapter) else None
        if got is None or got != expected:
            problems.append(f"{adapter} is not the certified adapter (sha256 {got}, certified {expected})")
    certified = {d.get("sha256") for d in cert.get("datasets") or []}
    for name in datasets:
        got = sha256_file(Path(name)) if os.path.isfile(name) else None
        if got is None or got not in certified:
            problems.append(f"{name} (sha256 {got}) is not one of the certified datasets")
    return problems


def cmd_report(args: argparse.Namespace) -> int:
    from lethe.core.run.report_html import write_report

    try:
        path = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0
