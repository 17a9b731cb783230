"""Service settings: one pydantic-settings class read from `LETHE_*` environment variables.

Every field has a description; `docs/settings.md` is generated from them
(`python -m lethe.service.settings > docs/settings.md`) and a test keeps the two in step.
The defaults are the embedded mode: SQLite, a local storage folder and an in-process worker,
all under `LETHE_DATA_DIR`. Production sets a PostgreSQL URL, a Redis broker and S3 storage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the API, the workers and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="LETHE_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        Path(".lethe"), description="Folder for the embedded defaults: the SQLite database, local "
        "storage and job work folders. Relative paths are taken from the current directory.")
    database_url: str = Field(
        "", description="SQLAlchemy URL of the database, e.g. "
        "`postgresql+psycopg2://lethe:secret@db:5432/lethe`. Empty: `sqlite:///<data_dir>/lethe.db`.")
    db_pool_size: int = Field(10, ge=1, description="Connections kept open per process (PostgreSQL).")
    broker_url: str = Field(
        "", description="Celery broker URL, e.g. `redis://redis:6379/0`. Empty: jobs run on an "
        "in-process worker thread inside the API (the embedded mode; run a single API process).")
    storage: Literal["local", "s3"] = Field(
        "local", description="Where datasets and artifacts are stored: `local` (a folder) or `s3`.")
    storage_dir: Path | None = Field(
        None, description="Folder of the local storage backend. Empty: `<data_dir>/storage`.")
    s3_endpoint_url: str = Field(
        "", description="S3 endpoint, e.g. `http://minio:9000` for MinIO. Empty: AWS. Credentials "
        "come from the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables.")
    s3_bucket: str = Field("", description="Bucket for datasets and artifacts when `storage` is `s3`.")
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. `lethe/` (optional).")
    allowed_s3_buckets: CommaList = Field(
        default_factory=list, description="Comma-separated buckets that `s3://bucket/key` dataset "
        "references may name. Empty: none, so `s3://` references are refused.")
    max_upload_mb: int = Field(512, ge=1, description="Largest dataset upload accepted, in MiB.")
    gpu_workers: bool = Field(
        False, description="Whether GPU workers serve the `gpu` queue: jobs with `model.device: auto` "
        "go to `gpu` when true and to `cpu` when false (`cuda` always goes to `gpu`).")
    worker_queues: CommaList = Field(
        default_factory=lambda: ["cpu"], description="Comma-separated queues `lethe worker` consumes "
        "by default (`gpu`, `cpu`); `--queues` overrides it.")
    inprocess_workers: int = Field(
        1, ge=1, le=64, description="Worker threads of the embedded mode (jobs run at once).")
    work_dir: Path | None = Field(
        None, description="Folder where workers keep run folders and checkpoints while a job runs. "
        "Empty: `<data_dir>/work`.")
    keep_work_dirs: bool = Field(
        False, description="Keep a job's run folder after it ends (for debugging); it is deleted otherwise.")
    heartbeat_s: float = Field(
        1.0, gt=0, description="Seconds between a running job's heartbeats; also how often it checks "
        "for a cancel request.")
    job_lease_s: float = Field(
        60.0, gt=0, description="A running job whose last heartbeat is older than this is taken to have "
        "lost its worker; a redelivered task may then take it over (resuming from its checkpoint).")
    progress_interval_s: float = Field(
        0.5, ge=0, description="At most one progress write per interval (stage changes always write).")
    visibility_timeout_s: int = Field(
        86_400, ge=60, description="Redis visibility timeout of Celery tasks; longer than any job, so "
        "a long job is not delivered to a second worker while it runs.")
    worker_metrics_port: int = Field(
        0, ge=0, le=65_535, description="Port of a Celery worker's Prometheus endpoint (step times); "
        "0: none.")
    allow_local_paths: bool = Field(
        False, description="Let job specs name files on the server's disk as datasets. Off: only "
        "`dataset:ID`, allowed `s3://`, `hf:` and `builtin:` references.")
    log_level: str = Field("info", description="Log level of the API and the workers.")
    cache_dir: Path | None = Field(
        None, description="Where the engine keeps prepared built-in models (read by `lethe.core`). "
        "Empty: `~/.cache/lethe`.")

    @field_validator("allowed_s3_buckets", "worker_queues", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'lethe.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def embedded(self) -> bool:
        """SQLite and no broker: one process owns everything, so it may migrate on start."""
        return self.is_sqlite and not self.broker_url

    @property
    def storage_root(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").expanduser().resolve()

    @property
    def work_root(self) -> Path:
        return (self.work_dir or self.data_dir / "work").expanduser().resolve()

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


def settings_markdown() -> str:
    """The settings table of `docs/settings.md`."""
    lines = ["# Settings", "",
             "Environment variables read by the API, the workers and the CLI (`lethe.service.settings`).",
             "Generated by `python -m lethe.service.settings > docs/settings.md`; a test keeps it in step.",
             "", "| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        shown = "" if default in (None, "") else str(default)
        lines.append(f"| `LETHE_{name.upper()}` | `{shown}` | {field.description} |".replace("``", "(empty)"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
