"""A small typed client of the Lethe HTTP API (httpx): datasets, jobs, artifacts, certificates.

    from lethe.client import LetheClient

    with LetheClient("http://127.0.0.1:8000", api_key="lethe_...") as lethe:
        job = lethe.submit("examples/tiny.yaml")        # uploads the spec's local files first
        job = lethe.wait(job.id)                        # a progress bar on stderr
        lethe.download(job.id, "result/")               # every artifact, SHA-256 checked
        print(lethe.verify_certificate("result/certificate.json", pin_to_server=True).reason)

The URL and key default to LETHE_URL and LETHE_API_KEY. Every failed request raises
`ClientError` with the server's message (`detail`), one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from lethe.evidence.certificate import Verification, load_public_key, verify_bytes

if TYPE_CHECKING:
    from lethe.core.spec.fields import DatasetRef

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("succeeded", "failed", "cancelled")


class ClientError(Exception):
    """A request the server refused (or could not be sent); `status` is None without an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    sha256: str | None
    row_count: int | None
    reference: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    status: str
    stage: str | None
    progress: dict[str, Any] | None
    metrics: dict[str, Any] | None
    error: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def done(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str
    url: str


def _job(data: dict[str, Any]) -> Job:
    return Job(
        data["id"],
        data["name"],
        data["status"],
        data.get("stage"),
        data.get("progress"),
        data.get("metrics"),
        data.get("error"),
        data,
    )


def _detail(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail", reply.text)
    except ValueError:
        return reply.text.strip()[:500] or reply.reason_phrase
    if isinstance(detail, list):  # 422: one entry per field
        return "; ".join(f"{p.get('field')}: {p.get('msg')}" for p in detail if isinstance(p, dict))
    return str(detail)


def read_spec(path: Path) -> dict[str, Any]:
    """A YAML or JSON spec file as a mapping (ClientError if it cannot be read)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ClientError(f"cannot read spec {path}: {err}") from None
    if not isinstance(loaded, dict):
        raise ClientError(f"spec {path} is not a mapping of fields (model, unlearn, ...)")
    return loaded


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class LetheClient:
    """The API over one httpx connection pool; use it as a context manager or call `close()`."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.url = (url or os.environ.get("LETHE_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LETHE_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    def __enter__(self) -> LetheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -------------------------------------------------------------- plumbing
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ClientError(f"cannot reach the Lethe service at {self.url}: {err}") from None
        if reply.status_code >= 400:
            raise ClientError(f"{method} {path}: {reply.status_code} {_detail(reply)}", reply.status_code)
        return reply

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -------------------------------------------------------------- datasets
    def upload_dataset(
        self,
        path: str | Path,
        schema: str = "pairs",
        format: str = "auto",
        columns: dict[str, str] | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Upload a JSONL, CSV, Parquet or text file; it is parsed and counted by the server."""
        path = Path(path)
        try:
            handle = path.open("rb")
        except OSError as err:
            raise ClientError(f"cannot read {path}: {err.strerror or err}") from None
        with handle:
            data = self._json(
                "POST",
                "/v1/datasets",
                files={"file": (path.name, handle)},
                data={
                    "schema": schema,
                    "format": format,
                    "columns": json.dumps(columns or {}),
                    "name": name or path.name,
                },
            )
        return Dataset(
            data["id"], data["name"], data.get("sha256"), data.get("row_count"), data["reference"], data
        )

    def upload_local_files(
        self, spec: dict[str, Any], base: Path, on_upload: Callable[[str, Dataset], None] | None = None
    ) -> dict[str, Any]:
        """A copy of `spec` whose local file sources are uploaded and named `dataset:ID`. The spec is
        checked with the service's own types first, so a spec with a mistake uploads nothing."""
        # the engine's spec types, imported on use: the other calls stay light
        from lethe.core.spec.job import SpecError, parse_spec
        from lethe.core.spec.refs import with_refs

        try:
            parsed = parse_spec(spec)
        except SpecError as err:
            raise ClientError(f"invalid spec: {err}") from None
        uploaded: dict[tuple[str, ...], str] = {}

        def upload(_: str, ref: DatasetRef) -> DatasetRef:
            if ":" in ref.source:  # dataset:, builtin:, hf:, s3:// pass as they are
                return ref
            key = (
                str((base / ref.source).resolve()),
                ref.schema_,
                ref.format,
                json.dumps(ref.columns or {}, sort_keys=True),
            )
            if key not in uploaded:
                dataset = self.upload_dataset(base / ref.source, ref.schema_, ref.format, ref.columns)
                uploaded[key] = dataset.reference
                if on_upload is not None:
                    on_upload(ref.source, dataset)
            return ref.model_copy(update={"source": uploaded[key]})

        return with_refs(parsed, upload).model_dump(mode="json", by_alias=True, exclude_unset=True)

    # -------------------------------------------------------------- jobs
    def submit(
        self,
        spec: dict[str, Any] | str | Path,
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a spec (a mapping, or a YAML/JSON file whose local datasets are uploaded first)."""
        if not isinstance(spec, dict):
            spec = self.upload_local_files(read_spec(Path(spec)), Path(spec).resolve().parent)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"callback_url": callback_url} if callback_url else {}
        return _job(self._json("POST", "/v1/jobs", json=spec, params=params, headers=headers))

    def job(self, job_id: str) -> Job:
        return _job(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """Cancel: a queued job at once, a running one at its next training step."""
        return _job(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def wait(
        self, job_id: str, *, progress: bool = True, poll_s: float = 1.0, timeout: float | None = None
    ) -> Job:
        """Poll until the job ends; with `progress`, a bar per stage on stderr."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with _Progress(enabled=progress) as bar:
            while True:
                job = self.job(job_id)
                bar.show(job)
                if job.done:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise ClientError(f"job {job_id} is still {job.status} after {timeout:.0f} s")
                time.sleep(poll_s)

    def webhook_deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/jobs/{job_id}/webhooks")

    # -------------------------------------------------------------- artifacts and certificates
    def artifacts(self, job_id: str) -> list[Artifact]:
        return [
            Artifact(a["name"], a["size"], a["sha256"], a["url"])
            for a in self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        ]

    def download_artifact(self, artifact: Artifact, out_dir: Path) -> Path:
        """Stream one artifact to `out_dir`; raise ClientError unless its SHA-256 matches."""
        out_dir.mkdir(parents=True, exist_ok=True)
        target, part = out_dir / artifact.name, out_dir / f"{artifact.name}.part"
        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", artifact.url) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    raise ClientError(
                        f"GET {artifact.url}: {reply.status_code} {_detail(reply)}", reply.status_code
                    )
                header = reply.headers.get("x-content-sha256")
                with part.open("wb") as out:
                    for chunk in reply.iter_bytes():
                        digest.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as err:
            part.unlink(missing_ok=True)
            raise ClientError(f"download of {artifact.name} failed: {err}") from None
        got = digest.hexdigest()
        if got != artifact.sha256 or (header and header != got):
            part.unlink(missing_ok=True)
            raise ClientError(f"{artifact.name}: SHA-256 {got} does not match the listed {artifact.sha256}")
        part.replace(target)
        return target

    def download(
        self,
        job_id: str,
        out_dir: str | Path,
        *,
        names: list[str] | None = None,
        extract_adapter: bool = True,
    ) -> list[Path]:
        """Every artifact (or `names`), each checked; the adapter archive is also extracted."""
        out = Path(out_dir)
        wanted = [a for a in self.artifacts(job_id) if names is None or a.name in names]
        paths = [self.download_artifact(a, out) for a in wanted]
        archive = out / "adapter.tar.gz"
        if extract_adapter and archive in paths:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(out, filter="data")
        return paths

    def certificate(self, job_id: str, out: str | Path | None = None) -> bytes:
        """The job's signed certificate, byte for byte (written to `out` if given)."""
        document = self._request("GET", f"/v1/jobs/{job_id}/certificate").content
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_bytes(document)
        return document

    def signing_key(self) -> dict[str, str]:
        """The service's public key: key_id, public_key (base64), public_key_pem."""
        return self._json("GET", "/v1/signing-key")

    def verify_certificate(
        self,
        document: bytes | str | Path,
        *,
        public_key: str | None = None,
        key_id: str | None = None,
        pin_to_server: bool = False,
    ) -> Verification:
        """Check a certificate offline; pin its signer by key, key id, or this server's key."""
        raw = document if isinstance(document, bytes) else Path(document).read_bytes()
        if pin_to_server:
            public_key = self.signing_key()["public_key"]
        return verify_bytes(raw, load_public_key(public_key) if public_key else None, key_id)

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        """The tenant's audit lines (admin key); filters as in GET /v1/audit."""
        text = self._request("GET", "/v1/audit", params={**filters, "format": "jsonl"}).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class _Progress:
    """Status lines and a tqdm bar per stage, from polled job states."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None  # a tqdm bar while a stage runs
        self.stage: str | None = None
        self.status: str | None = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def show(self, job: Job) -> None:
        if not self.enabled:
            return
        p = job.progress or {}
        if job.status != self.status:
            if job.done:  # the last step first, then the status line below the bar
                self._update(p)
                self._close()
            print(f"[{job.status}] job {job.id}", file=sys.stderr, flush=True)
            self.status = job.status
        if not job.done:
            self._update(p)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _update(self, p: dict[str, Any]) -> None:
        from tqdm import tqdm

        if not p.get("total"):
            return
        if self.bar is None or p.get("stage") != self.stage:
            self._close()
            self.bar = tqdm(total=p["total"], desc=p.get("stage"), file=sys.stderr, initial=p.get("step", 0))
            self.stage = p.get("stage")
        self.bar.n = p.get("step", 0)
        self.bar.set_postfix(
            {k: f"{v:.3f}" for k, v in (p.get("losses") or {}).items() if k != "grad_norm"}, refresh=False
        )
        self.bar.refresh()
