"""Response and request bodies of the HTTP API (the job body itself is `lethe.core.spec.job.JobSpec`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lethe.core.spec.fields import DatasetFormat, DatasetSchema


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class DatasetOut(Out):
    id: uuid.UUID
    name: str
    kind: Literal["upload", "s3", "hub"] = Field(description="an uploaded file or a registered reference")
    source: str | None = Field(None, description="the reference, for s3 and hub datasets")
    sha256: str | None = Field(None, description="SHA-256 of the content (not known for hub datasets)")
    schema_: str = Field(alias="schema", serialization_alias="schema")
    format: str
    columns: dict[str, str]
    row_count: int | None = Field(None, description="examples parsed at upload (not known for hub datasets)")
    size: int | None = Field(None, description="bytes")
    created_at: datetime
    reference: str = Field(description="what a job spec's `source` uses to name this dataset")


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null: last page")


class RegisterDataset(BaseModel):
    """A dataset registered by reference: validated (s3) or checked for form (hub), not uploaded."""

    # strict: a JSON body's values are taken as the schema types them (no "true" for true)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    # the example is one a default server accepts (an s3:// one needs an allowed bucket)
    source: str = Field(
        min_length=1,
        max_length=1024,
        description="s3://BUCKET/KEY (a bucket in LETHE_ALLOWED_S3_BUCKETS) or hf:ORG/NAME",
        examples=["hf:org/name"],
    )
    name: str | None = Field(None, max_length=200)
    schema_: DatasetSchema = Field("pairs", alias="schema")
    format: DatasetFormat = "auto"
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name -> column name")


class ProgressOut(BaseModel):
    stage: str
    step: int
    total: int
    losses: dict[str, float]
    eta_s: float | None
    elapsed_s: float | None = None


class MetricsOut(BaseModel):
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobOut(Out):
    id: uuid.UUID
    name: str
    status: JobStatus
    stage: str | None
    queue: str
    progress: ProgressOut | None
    metrics: MetricsOut | None
    error: str | None
    attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    submitted_by: str | None = Field(
        None, description="id of the API key that submitted the job (null: made without a key)"
    )
    submitted_by_name: str | None = Field(None, description="that key's name, as it was at submit time")


class JobDetail(JobOut):
    spec: dict[str, Any] = Field(description="the spec as submitted")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null: last page")


class EventOut(Out):
    id: int
    ts: datetime
    kind: str = Field(description="status | stage | progress | cancel_requested")
    payload: dict[str, Any]


class TenantEventOut(EventOut):
    """An event of the tenant-wide log (`GET /v1/events`): which job it belongs to, too."""

    job_id: uuid.UUID


class ArtifactOut(Out):
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime
    url: str


class Problem(BaseModel):
    field: str = Field(description="the dotted path of the field, e.g. `query.cursor`, `unlearn.train.lr`")
    msg: str = Field(description="what is wrong and what to send instead")


class ErrorOut(BaseModel):
    """Every 4xx and 5xx answer: a message, or (422) one problem per field."""

    detail: str | list[Problem]


ERROR_DESCRIPTIONS = {
    401: "no API key, or an unknown or revoked one (with `WWW-Authenticate: Bearer`)",
    403: "the API key lacks the scope this operation needs",
    404: "no such object in the caller's tenant",
    409: "the object's state does not allow this",
    413: "the body is over LETHE_MAX_JSON_KB (JSON) or LETHE_MAX_UPLOAD_MB (uploads)",
    422: "the request cannot be run: `detail` names each field and what to fix",
    429: "over the tenant's quota: retry after `Retry-After` seconds",
    503: "a backend (database, broker, storage) is unavailable: retry later",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route for these error statuses, each with the one error body."""
    return {code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="each dependency (database, storage, broker or worker): ok")


class NotReadyOut(BaseModel):
    detail: str = Field(description="which dependencies are unreachable, and why")
    checks: dict[str, str] = Field(description="each dependency: `ok` or `unreachable: REASON`")


# ------------------------------------------------------------------ certificates
# The certificate file as `lethe.evidence.certificate.sign` writes it (docs/compliance.md). The
# evidence parts are open objects: the worker's evidence may gain keys, and older certificates
# must still match.
class CertifiedIssuer(BaseModel):
    service: str
    version: str
    key_id: str


class CertifiedJob(BaseModel):
    id: uuid.UUID
    name: str
    tenant: str
    status: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int


class CertifiedDataset(BaseModel):
    model_config = ConfigDict(extra="allow")

    used_as: str = Field(description="where the spec uses it, e.g. `unlearn.forget`")
    source: str
    sha256: str | None = Field(description="SHA-256 of the bytes the worker read; null for hub datasets")


class CertifiedAdapter(BaseModel):
    archive: str
    archive_sha256: str | None
    files_sha256: dict[str, str]


class CertifiedErasure(BaseModel):
    subjects: list[str] = Field(description="the subjects whose rows were the forget set")
    subject_field: str = Field(description="the dataset column naming each row's subject")
    source: str | None = Field(description="the dataset the subjects were selected from")


class Certificate(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: str = Field(description="lethe-unlearning-certificate/1")
    issued_at: str
    issuer: CertifiedIssuer
    statement: str
    job: CertifiedJob
    spec: dict[str, Any]
    erasure: CertifiedErasure | None = Field(
        None, description="present for an erasure request (unlearn.erase)"
    )
    datasets: list[CertifiedDataset] = Field(default_factory=list)
    base_model: dict[str, Any] | None = None
    adapter: CertifiedAdapter | None = None
    artifacts_sha256: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    completed_at: str | None = None


class CertificateSignature(BaseModel):
    algorithm: Literal["Ed25519"]
    key_id: str = Field(description="SHA-256 (hex) of the raw public key")
    public_key: str = Field(description="the raw 32-byte public key, base64")
    value: str = Field(description="the 64-byte Ed25519 signature of the canonical `certificate`, base64")


class CertificateFile(BaseModel):
    """A signed certificate: verify the bytes as served (`lethe verify`), not a re-serialisation."""

    certificate: Certificate
    signature: CertificateSignature
