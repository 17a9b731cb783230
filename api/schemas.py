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

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(min_length=1, max_length=1024, examples=["s3://corpora/forget.jsonl", "hf:org/name"])
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


class JobOut(Out):
    id: uuid.UUID
    name: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
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


class ArtifactOut(Out):
    name: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime
    url: str


class Problem(BaseModel):
    field: str
    msg: str


class ErrorOut(BaseModel):
    detail: str | list[Problem]
