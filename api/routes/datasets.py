"""/v1/datasets: upload, register by reference, list, get, delete."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status

from lethe.api.deps import IdempotencyKey, ReadDep, RuntimeDep, SessionDep, SubmitDep
from lethe.api.schemas import DatasetOut, DatasetPage, RegisterDataset, errors
from lethe.core.spec.fields import DatasetSchema
from lethe.service.infra import idempotency
from lethe.service.infra.db import Dataset
from lethe.service.infra.errors import Invalid
from lethe.service.infra.object_store import CHUNK
from lethe.service.infra.runtime import Runtime
from lethe.service.storage import datasets as service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
WRITE_ERRORS = errors(401, 403, 409, 413, 422, 503)  # 409: an Idempotency-Key reused with another body
READ_ERRORS = errors(401, 403, 404, 422, 503)
UploadFormat = Literal["auto", "jsonl", "csv", "parquet", "text"]


def dataset_out(row: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(
        {
            **{
                c: getattr(row, c)
                for c in (
                    "id",
                    "name",
                    "kind",
                    "source",
                    "sha256",
                    "format",
                    "columns",
                    "row_count",
                    "size",
                    "created_at",
                )
            },
            "schema": row.schema,
            "reference": f"dataset:{row.id}",
        }
    )


def _columns(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as err:
        raise Invalid.one(
            "columns",
            f'not JSON ({err.msg}): send an object such as {{"prompt": "question", "response": "answer"}}',
        ) from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Invalid.one("columns", "must be a JSON object of canonical name -> column name")
    return value


@router.post("", name="upload", status_code=status.HTTP_201_CREATED, responses=WRITE_ERRORS)
def upload_dataset(
    rt: RuntimeDep,
    principal: SubmitDep,
    file: Annotated[UploadFile, File(description="JSONL, CSV, Parquet or plain text, with its file name")],
    schema_: Annotated[DatasetSchema, Form(alias="schema", description="how rows become examples")] = "pairs",
    format: Annotated[UploadFormat, Form(description="auto: from the file name's extension")] = "auto",
    columns: Annotated[
        str, Form(description='a JSON object of canonical name -> column name, e.g. {"prompt": "question"}')
    ] = "{}",
    # a plain string (empty: the file's name): generators send a null form field as "None"
    name: Annotated[str, Form(max_length=200)] = "",
    idempotency_key: IdempotencyKey = None,
) -> DatasetOut:
    """Upload a dataset: it is parsed and counted with its declared schema before it is stored."""
    meta = service.DatasetMeta(
        name=name or file.filename or "upload", schema=schema_, format=format, columns=_columns(columns)
    )
    digest = (
        ""
        if idempotency_key is None
        else idempotency.body_hash(
            [_file_sha256(file), file.filename, schema_, format, columns, name or None]
        )
    )

    def create() -> uuid.UUID:
        return service.upload_dataset(
            rt, file.file, file.filename or "upload", meta, tenant=principal.tenant
        ).id

    return _once(rt, principal.tenant, "POST /v1/datasets", idempotency_key, digest, create)


def _file_sha256(file: UploadFile) -> str:
    digest = hashlib.sha256()
    while block := file.file.read(CHUNK):
        digest.update(block)
    file.file.seek(0)
    return digest.hexdigest()


def _once(
    rt: Runtime, tenant: str, endpoint: str, key: str | None, digest: str, create: Callable[[], uuid.UUID]
) -> DatasetOut:
    slot = idempotency.Slot(tenant, endpoint, idempotency.check_key(key)) if key is not None else None
    dataset_id, _ = idempotency.run_once(rt, slot, digest, create)
    with rt.sessions() as session:
        return dataset_out(service.get_dataset(session, dataset_id, tenant=tenant))


@router.post("/register", name="register", status_code=status.HTTP_201_CREATED, responses=WRITE_ERRORS)
def register_dataset(
    rt: RuntimeDep,
    principal: SubmitDep,
    body: RegisterDataset,
    idempotency_key: IdempotencyKey = None,
) -> DatasetOut:
    """Register `s3://bucket/key` (an allowed bucket; validated now) or `hf:ORG/NAME` by reference."""
    meta = service.DatasetMeta(
        name=body.name or body.source, schema=body.schema_, format=body.format, columns=body.columns
    )
    digest = idempotency.body_hash(body.model_dump(mode="json", by_alias=True))
    return _once(
        rt,
        principal.tenant,
        "POST /v1/datasets/register",
        idempotency_key,
        digest,
        lambda: service.register_dataset(rt, body.source, meta, tenant=principal.tenant).id,
    )


@router.get("", name="list", responses=errors(401, 403, 422, 503))
def list_datasets(
    session: SessionDep,
    principal: ReadDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> DatasetPage:
    page = service.list_datasets(session, limit, cursor, tenant=principal.tenant)
    return DatasetPage(items=[dataset_out(r) for r in page.items], next_cursor=page.next_cursor)


# `:uuid`: only an id matches, so `/v1/datasets/register` is never read as one (GET on it is a 405)
@router.get("/{dataset_id:uuid}", name="get", responses=READ_ERRORS)
def get_dataset(session: SessionDep, principal: ReadDep, dataset_id: uuid.UUID) -> DatasetOut:
    return dataset_out(service.get_dataset(session, dataset_id, tenant=principal.tenant))


@router.delete(
    "/{dataset_id:uuid}",
    name="delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 409, 413, 422, 503),
)
def delete_dataset(rt: RuntimeDep, principal: SubmitDep, dataset_id: uuid.UUID) -> Response:
    """Delete a dataset; refused (409) while a queued or running job uses it."""
    service.delete_dataset(rt, dataset_id, tenant=principal.tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
