"""Submit a spec to a running Lethe service, follow it, print before/after, download the adapter.

Local dataset files named by the spec are uploaded first (POST /v1/datasets) and referred to as
`dataset:<id>`; built-in and hub references are passed as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
import time
from pathlib import Path

import httpx
import yaml

from lethe.core.report import before_after_table


def dataset_refs(spec: dict) -> list[dict]:
    unlearn, ev = spec.get("unlearn", {}), spec.get("eval", {})
    refs = [unlearn.get("forget"), unlearn.get("normal"), (spec.get("finetune") or {}).get("data")]
    refs += [ev.get(k) for k in ("harmful_prompts", "benign_prompts", "normal", "multiple_choice")]
    copyright = ev.get("copyright") or {}
    refs += [copyright.get("forget_text"), copyright.get("retain_text")]
    return [r for r in refs if r]


def upload_local_files(client: httpx.Client, spec: dict, base: Path) -> None:
    uploaded: dict[tuple, str] = {}
    for ref in dataset_refs(spec):
        source = ref["source"]
        if ":" in source:  # builtin:, hf:, dataset:, s3://
            continue
        key = (source, ref.get("schema", "pairs"), json.dumps(ref.get("columns", {})))
        if key not in uploaded:
            path = base / source
            with path.open("rb") as handle:
                reply = client.post("/v1/datasets", files={"file": (path.name, handle)}, data={
                    "schema": key[1], "format": ref.get("format", "auto"), "columns": key[2],
                    "name": path.name})
            _check(reply)
            uploaded[key] = reply.json()["id"]
            print(f"uploaded {source}: dataset {uploaded[key]} ({reply.json()['row_count']} rows)")
        ref["source"] = f"dataset:{uploaded[key]}"


def _check(reply: httpx.Response) -> None:
    if reply.status_code >= 400:
        sys.exit(f"error: {reply.request.method} {reply.request.url.path} -> {reply.status_code}: {reply.text}")


def follow(client: httpx.Client, job_id: str) -> dict:
    last = ""
    while True:
        reply = client.get(f"/v1/jobs/{job_id}")
        _check(reply)
        job = reply.json()
        progress = job.get("progress") or {}
        line = f"[{job['status']}] stage={job.get('stage')}"
        if progress.get("total"):
            losses = " ".join(f"{k}={v:.3f}" for k, v in (progress.get("losses") or {}).items())
            eta = progress.get("eta_s")
            line += f" step {progress.get('step')}/{progress['total']} {losses}"
            line += f" eta {eta:.0f}s" if eta is not None else ""
        if line != last:
            print(line, flush=True)
            last = line
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(2)


def download_adapter(client: httpx.Client, job_id: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / "adapter.tar.gz"
    digest = hashlib.sha256()
    with client.stream("GET", f"/v1/jobs/{job_id}/artifacts/adapter.tar.gz") as reply:
        _check(reply)
        expected = reply.headers.get("x-content-sha256")
        with target.open("wb") as handle:
            for chunk in reply.iter_bytes():
                digest.update(chunk)
                handle.write(chunk)
    if expected != digest.hexdigest():
        sys.exit(f"error: adapter SHA-256 {digest.hexdigest()} does not match the header {expected}")
    with tarfile.open(target) as archive:
        archive.extractall(out / "adapter_files", filter="data")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--out", default="result")
    args = parser.parse_args()
    spec_path = Path(args.spec)
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    with httpx.Client(base_url=args.url, timeout=120) as client:
        upload_local_files(client, spec, spec_path.parent)
        reply = client.post("/v1/jobs", json=spec)
        _check(reply)
        job_id = reply.json()["id"]
        print(f"submitted job {job_id}: GET {args.url}/v1/jobs/{job_id}")
        job = follow(client, job_id)
        if job["status"] != "succeeded":
            print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        print(before_after_table(job["metrics"]))
        target = download_adapter(client, job_id, Path(args.out))
        print(f"adapter: {target} (SHA-256 checked; extracted to {Path(args.out) / 'adapter_files'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
