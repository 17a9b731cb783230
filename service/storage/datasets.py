"""The dataset service: upload, register by reference, list, get and delete.

An upload is parsed by the engine's data layer before anything is stored (so a bad file is a 422
that names the problem), then stored content-addressed at `datasets/<sha256>`: the object is
written first and the row second, so no row ever points to a missing object.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lethe.core.spec.fields import DatasetRef
from lethe.service.infra import limits, locks, tenancy
from lethe.service.infra.db import ACTIVE_STATES, Dataset, Job, JobDataset, transaction, utcnow
from lethe.service.infra.errors import Conflict, Invalid, Problem, TooLarge
from lethe.service.infra.object_store import CHUNK, s3_client
from lethe.service.infra.pages import Page, paginate
from lethe.service.infra.runtime import Runtime
from lethe.service.infra.settings import Settings

SUFFIXES = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet", "text": ".txt"}
FORMAT_OF_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}
HUB_DATASET = re.compile(r"^hf:[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")


@dataclass(frozen=True)
class DatasetMeta:
    """What the uploader declares: how rows become examples (see `lethe.core.spec.fields.DatasetRef`)."""

    name: str
    schema: str = "pairs"
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)


def hub_dataset_cached(name: str) -> bool:
    """Whether a hub dataset (`ORG/NAME`) is in the hub's or the datasets library's cache, where
    the worker's offline loader looks for it."""
    from huggingface_hub import constants

    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets"
    hub = Path(constants.HF_HUB_CACHE) / ("datasets--" + name.replace("/", "--"))
    return hub.is_dir() or (Path(datasets_cache) / name.replace("/", "___")).is_dir()


def hub_unreachable(source: str, settings: Settings) -> str | None:
    """Why the workers could not read the hub dataset `source` (`hf:ORG/NAME`), as the end of a
    sentence naming it, or None when they can: the hub is reachable, or the dataset is in the
    local cache. Checked at registration and at submission, so a job does not fail later on it."""
    if settings.hub_reachable or hub_dataset_cached(source.removeprefix("hf:")):
        return None
    return (
        "is on the model hub, which this server cannot reach, and it is not in the server's "
        "cache: upload the file with POST /v1/datasets and use the dataset:<id> it returns (an "
        "admin can allow hub access with LETHE_HUB_ACCESS, or put the dataset in the cache)"
    )


def dataset_id_of(source: str) -> uuid.UUID | None:
    """The id in a `dataset:<id>` reference; None for other references; ValueError if malformed."""
    if not source.startswith("dataset:"):
        return None
    return uuid.UUID(source.removeprefix("dataset:"))


def storage_key(tenant: str, sha256: str) -> str:
    """Per tenant: identical uploads of two tenants share nothing (not even a timing hint)."""
    return f"datasets/{tenant}/{sha256}"


# ------------------------------------------------------------------ validation
def _declared_ref(meta: DatasetMeta, source: str, fmt: str) -> DatasetRef:
    try:
        return DatasetRef.model_validate(
            {"source": source, "format": fmt, "schema": meta.schema, "columns": meta.columns}
        )
    except ValidationError as err:
        raise Invalid(
            [Problem(".".join(map(str, e["loc"])) or "dataset", e["msg"]) for e in err.errors()]
        ) from None


def resolve_format(declared: str, filename: str) -> str:
    """The declared format, or the one the file name's suffix implies."""
    if declared not in ("auto", ""):
        if declared not in SUFFIXES:
            raise Invalid.one("format", f"{declared!r} cannot be uploaded: use one of {', '.join(SUFFIXES)}")
        return declared
    fmt = FORMAT_OF_SUFFIX.get(Path(filename).suffix.lower())
    if fmt is None:
        raise Invalid.one(
            "format",
            f"cannot tell the format of {filename!r} from its name: "
            f"set format to one of {', '.join(SUFFIXES)}",
        )
    return fmt


def count_rows(path: Path, meta: DatasetMeta, fmt: str, shown_as: str, settings: Settings) -> int:
    """Parse the file as the engine will, and count its examples; 422 if it cannot be used, 413
    if one example is over the row limit.

    Messages name the file as the user knows it (`shown_as`), not the server's temporary path.
    """
    from lethe.core.data.examples import DataError, load_examples

    ref = _declared_ref(meta, str(path), fmt)
    try:
        examples = load_examples(ref)
    except DataError as err:
        raise Invalid.one("file", str(err).replace(str(path), shown_as)) from None
    except Exception as err:  # noqa: BLE001 - any parser failure is a problem with the user's file
        first = (str(err).splitlines() or [type(err).__name__])[0].replace(str(path), shown_as)
        raise Invalid.one("file", f"{shown_as} cannot be read as {fmt}: {first}") from None
    limits.check_example_sizes(examples, settings, shown_as)
    rows = len(examples)
    if rows == 0:
        raise Invalid.one("file", f"no examples found in {shown_as} for schema {meta.schema!r}")
    return rows


def _spool(stream: BinaryIO, dest: Path, limit: int) -> tuple[str, int]:
    """Copy `stream` to `dest`, returning (sha256, size); 413 past `limit` bytes."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        while block := stream.read(CHUNK):
            size += len(block)
            if size > limit:
                raise TooLarge(
                    f"the file is larger than the {limit // 2**20} MiB limit (LETHE_MAX_UPLOAD_MB)"
                )
            digest.update(block)
            out.write(block)
    if size == 0:
        raise Invalid.one("file", "the file is empty")
    return digest.hexdigest(), size


# ------------------------------------------------------------------ create
def upload_dataset(
    rt: Runtime, stream: BinaryIO, filename: str, meta: DatasetMeta, *, tenant: str
) -> Dataset:
    """Validate an uploaded file and store it; return the new dataset row."""
    filename = limits.sanitise_name(filename)
    meta = replace(meta, name=limits.sanitise_name(meta.name, filename))
    fmt = resolve_format(meta.format, filename)
    _declared_ref(meta, "upload", fmt)  # a bad schema or columns fails before the file is read
    tmp_root = rt.settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        path = Path(tmp) / f"upload{SUFFIXES[fmt]}"
        sha256, size = _spool(stream, path, rt.settings.max_upload_bytes)
        rows = count_rows(path, meta, fmt, filename, rt.settings)
        key = storage_key(tenant, sha256)
        with locks.blob_lock(rt, key), transaction(rt.sessions) as session:
            if not rt.storage.exists(key):
                rt.storage.put_file(key, path)
            row = Dataset(
                tenant=tenant,
                name=meta.name or filename,
                kind="upload",
                sha256=sha256,
                schema=meta.schema,
                format=fmt,
                columns=dict(meta.columns),
                row_count=rows,
                size=size,
                storage_key=key,
            )
            session.add(row)
    return row


def register_dataset(rt: Runtime, source: str, meta: DatasetMeta, *, tenant: str) -> Dataset:
    """Register an `s3://bucket/key` (validated and hashed now) or an `hf:ORG/NAME` reference."""
    meta = replace(meta, name=limits.sanitise_name(meta.name, source))
    if source.startswith("s3://"):
        return _register_s3(rt, source, meta, tenant)
    if not HUB_DATASET.match(source):
        raise Invalid.one(
            "source",
            f"{source[:200]!r} cannot be registered: use s3://BUCKET/KEY "
            "(an allowed bucket) or hf:ORG/NAME; URLs and server paths are not accepted",
        )
    _declared_ref(meta, source, "hub" if meta.format in ("auto", "") else meta.format)
    unreachable = hub_unreachable(source, rt.settings)
    if unreachable is not None:  # every job naming it would be refused (or fail): say so now
        raise Invalid.one("source", f"{source!r} {unreachable}")
    with transaction(rt.sessions) as session:
        row = Dataset(
            tenant=tenant,
            name=meta.name or source,
            kind="hub",
            source=source,
            schema=meta.schema,
            format="hub",
            columns=dict(meta.columns),
        )
        session.add(row)
    return row


def check_s3_uri(rt: Runtime, uri: str, field_name: str = "source") -> tuple[str, str]:
    """(bucket, key) of an s3:// URI in an allowed bucket; 422 otherwise."""
    match = S3_URI.match(uri)
    if not match:
        raise Invalid.one(field_name, f"{uri!r} is not an s3://BUCKET/KEY reference")
    bucket, key = match.groups()
    allowed = rt.settings.allowed_s3_buckets
    if bucket not in allowed:
        listed = ", ".join(allowed) if allowed else "none are configured"
        raise Invalid.one(
            field_name, f"bucket {bucket!r} is not allowed (LETHE_ALLOWED_S3_BUCKETS: {listed})"
        )
    return bucket, key


def fetch_s3(rt: Runtime, uri: str, dest: Path, field_name: str = "source") -> tuple[str, int]:
    """Download an allowed s3:// object to `dest`, returning (sha256, size)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = check_s3_uri(rt, uri, field_name)
    try:
        body = s3_client(rt.settings).get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise Invalid.one(field_name, f"cannot read {uri}: {code}") from None
    except BotoCoreError as err:
        raise Invalid.one(field_name, f"cannot read {uri}: {err}") from None
    with body:
        return _spool(body, dest, rt.settings.max_upload_bytes)


def _register_s3(rt: Runtime, uri: str, meta: DatasetMeta, tenant: str) -> Dataset:
    fmt = resolve_format(meta.format, uri)
    _declared_ref(meta, uri, fmt)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"object{SUFFIXES[fmt]}"
        sha256, size = fetch_s3(rt, uri, path)
        rows = count_rows(path, meta, fmt, uri, rt.settings)
    with transaction(rt.sessions) as session:
        row = Dataset(
            tenant=tenant,
            name=meta.name or uri,
            kind="s3",
            source=uri,
            sha256=sha256,
            schema=meta.schema,
            format=fmt,
            columns=dict(meta.columns),
            row_count=rows,
            size=size,
        )
        session.add(row)
    return row


# ------------------------------------------------------------------ read and delete
def list_datasets(
    session: Session, limit: int = 50, cursor: str | None = None, *, tenant: str
) -> Page[Dataset]:
    return paginate(session, tenancy.datasets(tenant), Dataset, limit, cursor)


def get_dataset(session: Session, dataset_id: uuid.UUID, *, tenant: str) -> Dataset:
    return tenancy.dataset(session, tenant, dataset_id)


def active_jobs_using(session: Session, dataset_id: uuid.UUID) -> list[uuid.UUID]:
    query = (
        select(Job.id)
        .join(JobDataset, JobDataset.job_id == Job.id)
        .where(JobDataset.dataset_id == dataset_id, Job.status.in_(ACTIVE_STATES))
    )
    return list(session.scalars(query))


def delete_dataset(rt: Runtime, dataset_id: uuid.UUID, *, tenant: str) -> None:
    """Delete a dataset (409 while a queued or running job uses it) and, if it was the last
    row holding its content, the stored object. The row is marked first, the object removed
    after: a failure in between leaves an orphan object, never a row without its object."""
    with transaction(rt.sessions) as session:
        lock_name = get_dataset(session, dataset_id, tenant=tenant).storage_key
    with locks.blob_lock(rt, lock_name or "-"):
        with transaction(rt.sessions) as session:
            row = tenancy.dataset(session, tenant, dataset_id, for_update=True)
            users = active_jobs_using(session, dataset_id)
            if users:
                raise Conflict(
                    f"dataset {dataset_id} is used by queued or running job(s) "
                    f"{', '.join(map(str, users))}: cancel them or wait for them to end"
                )
            row.deleted, row.deleted_at = True, utcnow()
            key = row.storage_key
            still_used = key is not None and session.scalar(
                select(func.count())
                .select_from(Dataset)
                .where(Dataset.storage_key == key, Dataset.deleted.is_(False), Dataset.id != dataset_id)
            )
        if key is not None and not still_used:
            rt.storage.delete(key)
