"""Turning a job's dataset references into what the engine reads: local files or hub ids.

`dataset:<id>` becomes a local copy of the stored object (or, for a registered reference, the
re-fetched object, checked against the SHA-256 taken at registration, or the `hf:` id), and takes
the format, schema and columns declared with the dataset unless the spec sets them itself.
`s3://bucket/key` in an allowed bucket is downloaded. Other references pass through unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lethe.core.spec.fields import DatasetRef
from lethe.core.spec.job import JobSpec
from lethe.core.spec.refs import with_refs
from lethe.service.infra.db import Dataset
from lethe.service.infra.errors import Invalid
from lethe.service.infra.runtime import Runtime
from lethe.service.storage.datasets import SUFFIXES, dataset_id_of, fetch_s3, resolve_format


class DatasetChanged(Invalid):
    """A registered s3:// object no longer has the content it was validated with."""


def _declared(ref: DatasetRef, row: Dataset) -> dict[str, Any]:
    """The dataset's declared format, schema and columns, where the spec does not set its own."""
    declared = {"format": row.format, "schema_": row.schema, "columns": dict(row.columns)}
    return {name: value for name, value in declared.items() if name not in ref.model_fields_set}


def _materialise(rt: Runtime, path: str, row: Dataset, dest_dir: Path) -> str:
    """A source the engine can read for one dataset row."""
    if row.kind == "hub":
        return row.source or ""
    dest = dest_dir / f"{row.sha256}{SUFFIXES[row.format]}"
    if dest.exists():  # an earlier attempt (or another reference) fetched it already
        return str(dest)
    if row.kind == "upload":
        rt.storage.get_file(row.storage_key or "", dest)
        return str(dest)
    sha256, _ = fetch_s3(rt, row.source or "", dest.with_suffix(".fetching"), f"{path}.source")
    if sha256 != row.sha256:
        dest.with_suffix(".fetching").unlink(missing_ok=True)
        raise DatasetChanged.one(
            f"{path}.source",
            f"{row.source} changed since it was registered as "
            f"dataset {row.id} (sha256 {row.sha256}): register it again",
        )
    dest.with_suffix(".fetching").rename(dest)
    return str(dest)


def local_ref(rt: Runtime, path: str, ref: DatasetRef, row: Dataset, dest_dir: Path) -> DatasetRef:
    """`ref` to the dataset `row` as the engine reads it: a local copy (or the hub id), with the
    format, schema and columns declared with the dataset where the spec sets none."""
    source = _materialise(rt, path, row, dest_dir)
    return ref.model_copy(update={**_declared(ref, row), "source": source})


def resolve_datasets(rt: Runtime, spec: JobSpec, dest_dir: Path) -> JobSpec:
    """A copy of `spec` whose service-only references are local files or hub ids."""
    dest_dir.mkdir(parents=True, exist_ok=True)

    def resolve(path: str, ref: DatasetRef) -> DatasetRef:
        dataset_id = dataset_id_of(ref.source)
        if dataset_id is not None:
            with rt.sessions() as session:
                row = session.scalars(select(Dataset).where(Dataset.id == dataset_id)).one()
            return local_ref(rt, path, ref, row, dest_dir)
        if ref.source.startswith("s3://"):
            fmt = resolve_format(ref.format, ref.source)
            name = hashlib.sha256(ref.source.encode()).hexdigest()[:32]
            dest = dest_dir / f"s3-{name}{SUFFIXES[fmt]}"
            if not dest.exists():
                fetch_s3(rt, ref.source, dest, f"{path}.source")
            return ref.model_copy(update={"format": fmt, "source": str(dest)})
        return ref

    return with_refs(spec, resolve)
