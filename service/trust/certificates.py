"""Unlearning certificates: evidence recorded by the worker, signed by the API when first asked.

When a job succeeds, the worker records what only it can see, in the transaction that marks the
job succeeded: the SHA-256 of every dataset it used, the base model's reference and weights hash
(`model.json` of the run folder), the adapter's hashes, every artifact's hash, the metrics before
and after, and the versions (`env.json`). `GET /v1/jobs/{id}/certificate` adds the job record
(spec as submitted, timestamps) and signs it with the service's Ed25519 key, once: the stored
document is returned byte for byte afterwards. Workers never hold the signing key.

The file format and offline verification are in `lethe.evidence.certificate`.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from lethe import __version__
from lethe.core.spec.subjects import erasure_of
from lethe.evidence.certificate import FORMAT, finite, key_id, sign
from lethe.service.infra import tenancy
from lethe.service.infra.db import Artifact, CertificateRecord, Dataset, Job, affected, transaction, utcnow
from lethe.service.infra.errors import Conflict
from lethe.service.infra.runtime import Runtime
from lethe.service.infra.settings import Settings
from lethe.service.storage.artifacts import ADAPTER_ARCHIVE, file_sha256
from lethe.service.trust import audit

HUB_NOTE = "a model-hub dataset: the service never holds its bytes; pin its revision in the spec"


# ------------------------------------------------------------------ the signing key
def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The service's key from `signing_key_path`, generated there (mode 0600) on first start."""
    path = settings.signing_key_path
    if not path.exists():
        _create_key(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _create_key(path: Path) -> None:
    """Write a new key atomically; if another process wrote one first, keep theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ evidence (worker side)
def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _local_source(ref: Any, work: Path) -> Path | None:
    """The file the worker read for a reference that is not `dataset:ID`, if there is one."""
    from lethe.core.data.examples import builtin_path

    source: str = ref.source
    if source.startswith("builtin:"):
        return builtin_path(source.removeprefix("builtin:"))
    if source.startswith("s3://"):
        name = hashlib.sha256(source.encode()).hexdigest()[:32]
        return next(iter(sorted((work / "datasets").glob(f"s3-{name}.*"))), None)
    if source.startswith("hf:"):
        return None
    return Path(source) if Path(source).is_file() else None


def dataset_hashes(rt: Runtime, spec: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """One entry per dataset reference of the spec: where it is used, what it is, its SHA-256."""
    from lethe.core.spec.job import parse_spec
    from lethe.core.spec.refs import dataset_refs
    from lethe.service.storage.datasets import dataset_id_of

    entries = []
    for path, ref in dataset_refs(parse_spec(spec)):
        entry: dict[str, Any] = {"used_as": path, "source": ref.source, "sha256": None}
        dataset_id = dataset_id_of(ref.source)
        if dataset_id is not None:
            with rt.sessions() as session:
                row = session.scalars(select(Dataset).where(Dataset.id == dataset_id)).one()
            entry.update(
                name=row.name,
                kind=row.kind,
                sha256=row.sha256,
                rows=row.row_count,
                size=row.size,
                **({"origin": row.source} if row.source else {}),
            )
        else:
            local = _local_source(ref, work)
            entry.update(sha256=file_sha256(local) if local else None)
        if entry["sha256"] is None:
            entry["note"] = HUB_NOTE
        entries.append(entry)
    return entries


def _adapter(run_dir: Path, rows: list[Artifact]) -> dict[str, Any]:
    folder = run_dir / "adapter"
    files = (
        {
            p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }
        if folder.is_dir()
        else {}
    )
    archive = next((r.sha256 for r in rows if r.name == ADAPTER_ARCHIVE), None)
    return {"archive": ADAPTER_ARCHIVE, "archive_sha256": archive, "files_sha256": files}


def collect_evidence(rt: Runtime, spec: dict[str, Any], work: Path, rows: list[Artifact]) -> dict[str, Any]:
    """What the worker vouches for about a succeeded run (stored with the job's final state)."""
    run_dir = work / "run"
    metrics = _read_json(run_dir / "metrics.json")
    model = _read_json(run_dir / "model.json") or {
        "reference": (spec.get("model") or {}).get("name"),
        "weights_sha256": None,
    }
    return finite(
        {
            "datasets": dataset_hashes(rt, spec, work),
            "base_model": model,
            "adapter": _adapter(run_dir, rows),
            "artifacts_sha256": {r.name: r.sha256 for r in rows},
            "metrics": {k: metrics.get(k) for k in ("before", "after", "comparison", "judge", "training")},
            "environment": _read_json(run_dir / "env.json"),
            "completed_at": utcnow().isoformat(),
        }
    )


# ------------------------------------------------------------------ issuing (API side)
def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def compose(job: Job, evidence: dict[str, Any], signer: str) -> dict[str, Any]:
    """The certificate's content: the job record, then the worker's evidence."""
    erasure = erasure_of(job.spec or {})
    erased = (
        f" It was an erasure request for {len(erasure['subjects'])} subject(s), named under `erasure`."
        if erasure is not None
        else ""
    )
    return {
        "format": FORMAT,
        "issued_at": utcnow().isoformat(),
        "issuer": {"service": "lethe", "version": __version__, "key_id": signer},
        "statement": (
            f"Lethe job {job.id} ran the unlearning spec below on base model "
            f"{(evidence.get('base_model') or {}).get('reference')} and produced the adapter "
            "and metrics below from the datasets below." + erased
        ),
        "job": {
            "id": str(job.id),
            "name": job.name,
            "tenant": job.tenant,
            "status": job.status,
            "created_at": _ts(job.created_at),
            "started_at": _ts(job.started_at),
            "finished_at": _ts(job.finished_at),
            "attempts": job.attempts,
        },
        "spec": job.spec,
        # an erasure request's subjects, stated outright: what a privacy officer files
        **({"erasure": erasure} if erasure is not None else {}),
        **evidence,
    }


def issue(
    rt: Runtime, key: Ed25519PrivateKey, job_id: uuid.UUID, tenant: str, requested_by: str | None = None
) -> bytes:
    """The job's signed certificate file: signed on the first request, the same bytes after."""
    while True:  # a second pass only when another replica signed it at the same moment
        document = _issue_once(rt, key, job_id, tenant, requested_by)
        if document is not None:
            return document


def _issue_once(
    rt: Runtime, key: Ed25519PrivateKey, job_id: uuid.UUID, tenant: str, requested_by: str | None
) -> bytes | None:
    signer = key_id(key.public_key())
    with transaction(rt.sessions) as session:
        job = tenancy.job(session, tenant, job_id)
        if job.status != "succeeded":
            raise Conflict(f"job {job_id} is {job.status}: certificates are issued for succeeded jobs only")
        record = session.get(CertificateRecord, job_id)
        if record is None:
            raise Conflict(
                f"job {job_id} has no recorded evidence (it finished before certificates "
                "existed): no certificate can be issued"
            )
        if record.document:
            return record.document.encode("utf-8")
        document = sign(key, compose(job, record.evidence, signer))
        signed = session.execute(
            update(CertificateRecord)
            .where(CertificateRecord.job_id == job_id, CertificateRecord.document.is_(None))
            .values(document=document.decode("utf-8"), key_id=signer, signed_at=utcnow())
        )
        if not affected(signed):
            return None
        audit.record_on_commit(
            session,
            audit.Line(
                actor="key" if requested_by else "system",
                action="certificate.issued",
                tenant=tenant,
                key_id=requested_by,
                target=f"job:{job_id}",
                detail={"sha256": hashlib.sha256(document).hexdigest(), "signing_key": signer},
            ),
        )
    return document
