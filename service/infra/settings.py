"""Service settings: one pydantic-settings class read from `LETHE_*` environment variables.

Every field has a description; `docs/settings.md` is generated from them
(`python -m lethe.service.infra.settings > docs/settings.md`) and a test keeps the two in step.
The defaults are the embedded mode: SQLite, a local storage folder and an in-process worker,
all under `LETHE_DATA_DIR`. Production sets a PostgreSQL URL, a Redis broker and S3 storage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from lethe.service.infra.capacity import QueueCapacities

CommaList = Annotated[list[str], NoDecode]
# the settings `tenant_limits` may override per tenant (see Settings.for_tenant)
TENANT_LIMITS = (
    "max_job_steps",
    "max_job_examples",
    "max_example_tokens",
    "max_job_estimated_s",
    "job_time_budget_s",
    "tenant_max_queued",
    "tenant_max_running",
)
FLOAT_LIMITS = ("max_job_estimated_s", "job_time_budget_s")


class Settings(BaseSettings):
    """Everything the API, the workers and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="LETHE_", extra="ignore", validate_default=True)

    data_dir: Path = Field(
        Path(".lethe"),
        description="Folder for the embedded defaults: the SQLite database, local "
        "storage and job work folders. Relative paths are taken from the current directory.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the database, e.g. "
        "`postgresql+psycopg2://lethe:secret@db:5432/lethe`. Empty: `sqlite:///<data_dir>/lethe.db`.",
    )
    db_pool_size: int = Field(10, ge=1, description="Connections kept open per process (PostgreSQL).")
    broker_url: str = Field(
        "",
        description="Celery broker URL, e.g. `redis://redis:6379/0`. Empty: jobs run on an "
        "in-process worker thread inside the API (the embedded mode; run a single API process).",
    )
    storage: Literal["local", "s3"] = Field(
        "local", description="Where datasets and artifacts are stored: `local` (a folder) or `s3`."
    )
    storage_dir: Path | None = Field(
        None, description="Folder of the local storage backend. Empty: `<data_dir>/storage`."
    )
    s3_endpoint_url: str = Field(
        "",
        description="S3 endpoint, e.g. `http://minio:9000` for MinIO. Empty: AWS. Credentials "
        "come from the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables.",
    )
    s3_bucket: str = Field("", description="Bucket for datasets and artifacts when `storage` is `s3`.")
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. `lethe/` (optional).")
    allowed_s3_buckets: CommaList = Field(
        default_factory=list,
        description="Comma-separated buckets that `s3://bucket/key` dataset "
        "references may name. Empty: none, so `s3://` references are refused.",
    )
    max_upload_mb: int = Field(512, ge=1, description="Largest dataset upload accepted, in MiB.")
    gpu_workers: bool = Field(
        False,
        description="Whether GPU workers serve the `gpu` queue: jobs with `model.device: auto` "
        "go to `gpu` when true and to `cpu` when false (`cuda` always goes to `gpu`).",
    )
    worker_devices: CommaList = Field(
        default_factory=list,
        description="Devices the workers have (`cpu`, `cuda`): a spec with `model.device: cuda` "
        "is refused at submission (422) unless `cuda` is listed. Empty: `cuda,cpu` when "
        "`gpu_workers` is true or the API process sees a GPU, else `cpu`.",
    )
    queue_capacity: QueueCapacities = Field(
        default_factory=dict,
        description="Each queue's workers, in the order jobs are placed: `NAME=KIND:COUNTxMEMORY`, "
        "e.g. `gpu=cuda:1x80GiB,cpu=cpu:1x16GiB` (kind `cuda` or `cpu`, devices per worker, memory "
        "per device). A job goes to the first queue of its device's kind (`auto`: GPU queues first) "
        "with `model.devices` devices and its memory estimate; one that fits none gets 422. "
        "Empty: `gpu_workers`/`worker_devices` pick the queue, and memory is not checked.",
    )
    hub_access: bool | None = Field(
        None,
        description="Whether workers can download from the Hugging Face hub. Off: a spec naming a hub "
        "model (`org/name`) or hub dataset (`hf:ORG/NAME`, also a registered one) that is not in the "
        "local cache gets 422 at submission, and so does registering an `hf:` dataset. Empty: off "
        "when the API process runs with HF_HUB_OFFLINE=1, on otherwise.",
    )
    worker_queues: CommaList = Field(
        default_factory=lambda: ["cpu"],
        description="Comma-separated queues `lethe worker` consumes "
        "by default (`gpu`, `cpu`); `--queues` overrides it.",
    )
    inprocess_workers: int = Field(
        1, ge=1, le=64, description="Worker threads of the embedded mode (jobs run at once)."
    )
    work_dir: Path | None = Field(
        None,
        description="Folder where workers keep run folders and checkpoints while a job runs. "
        "Empty: `<data_dir>/work`.",
    )
    examples_dir: Path | None = Field(
        None,
        description="Folder of example specs the console offers as starting points (`*.yaml`). "
        "Empty: the repository's `examples/` when Lethe runs from a checkout, else none.",
    )
    checkpoint_every: int = Field(
        25,
        ge=0,
        description="Checkpoint interval (steps) of training stages whose spec sets none, so "
        "that a job whose worker died resumes instead of starting again; 0: only what specs ask for.",
    )
    keep_work_dirs: bool = Field(
        False, description="Keep a job's run folder after it ends (for debugging); it is deleted otherwise."
    )
    heartbeat_s: float = Field(
        1.0,
        gt=0,
        description="Seconds between a running job's heartbeats; also how often it checks "
        "for a cancel request.",
    )
    dist_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Data-parallel jobs (`model.devices` > 1): seconds a collective waits for a rank "
        "before the job fails (read by the ranks of the engine from this variable).",
    )
    job_lease_s: float = Field(
        60.0,
        gt=0,
        description="A running job whose last heartbeat is older than this is taken to have "
        "lost its worker; a redelivered task may then take it over (resuming from its checkpoint).",
    )
    progress_interval_s: float = Field(
        0.5, ge=0, description="At most one progress write per interval (stage changes always write)."
    )
    visibility_timeout_s: int = Field(
        86_400,
        ge=60,
        description="Redis visibility timeout of Celery tasks; longer than any job, so "
        "a long job is not delivered to a second worker while it runs.",
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65_535, description="Port of a Celery worker's Prometheus endpoint (step times); 0: none."
    )
    allow_local_paths: bool = Field(
        False,
        description="Let job specs name files on the server's disk as datasets. Off: only "
        "`dataset:ID`, allowed `s3://`, `hf:` and `builtin:` references.",
    )
    bootstrap_key: SecretStr = Field(
        SecretStr(""),
        description="An admin API key installed at start (for scripts and the demo); "
        "send it as `Authorization: Bearer KEY`. Unset: the previous bootstrap key is revoked.",
    )
    auth_cache_s: float = Field(
        5.0,
        ge=0,
        description="Seconds an API process keeps a valid API key's lookup, so polling does not "
        "query the database for the key on every request; a revoked key keeps working for up to "
        "this long in processes that used it recently. 0: look every key up.",
    )
    bootstrap_tenant: str = Field(
        "default", description="Tenant of the bootstrap key (rows from before tenants belong to `default`)."
    )
    max_json_kb: int = Field(
        1024, ge=1, description="Largest JSON request body (a job spec, a registration), in KiB; 413 over it."
    )
    max_row_kb: int = Field(
        256,
        ge=1,
        description="Largest single example (prompt + answer, or one text row) of a dataset, "
        "in KiB; an upload with a bigger one gets 413.",
    )
    max_job_steps: int = Field(
        100_000,
        ge=1,
        description="Most optimizer steps one training stage of a job may take (`unlearn.train`, "
        "`finetune.train`, `probes.relearn`); a stage given in epochs counts as epochs x examples / "
        "(batch_size x grad_accum). A spec over it gets 422.",
    )
    max_example_tokens: int = Field(
        8192,
        ge=8,
        description="Most tokens per example a job may ask for: `format.max_length` (prompt + answer) "
        "and every `max_new_tokens` of generation. A spec over it gets 422.",
    )
    max_job_estimated_s: float = Field(
        86_400.0,
        gt=0,
        description="Longest estimated run time of a job, in seconds, checked at submission: tokens "
        "trained (steps x batch_size x grad_accum x max_length per training stage, twice with normal "
        "data) and generated (max_new_tokens per evaluated example) times `token_cost_s`. A spec "
        "over it gets 422.",
    )
    token_cost_s: float = Field(
        0.001,
        gt=0,
        description="Seconds a worker takes per token for the run-time estimate (`max_job_estimated_s`); "
        "measure it on your workers (a job's `elapsed_s` over its tokens).",
    )
    job_time_budget_s: float = Field(
        86_400.0,
        ge=0,
        description="Longest time a job may run, counted over all its attempts (time queued does not "
        "count); a job past it is stopped at its next step and marked failed with the reason. "
        "0: no budget.",
    )
    tenant_limits: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per-tenant overrides of the job limits, as JSON: "
        '`{"acme": {"max_job_steps": 500000, "job_time_budget_s": 7200}}`. Keys: '
        "`max_job_steps`, `max_job_examples`, `max_example_tokens`, `max_job_estimated_s`, "
        "`job_time_budget_s`, `tenant_max_queued`, `tenant_max_running`.",
    )
    max_job_examples: int = Field(
        1_000_000,
        ge=1,
        description="Most examples a job may use from one dataset (after its `offset` and `limit`), "
        "checked where the size is known at submission (uploads and `s3://` registrations); a spec "
        "over it gets 422.",
    )
    allowed_models: CommaList = Field(
        default_factory=list,
        description="Model references jobs may name besides the built-ins: hub "
        "ids or glob patterns (`HuggingFaceTB/*`; `*` allows any hub id). A local checkpoint folder "
        "(also `eval.judge.path`) must be listed exactly. Empty: built-in models only.",
    )
    allow_remote_code: bool = Field(
        False,
        description="Admin switch: let specs set `model.trust_remote_code: true` (runs code "
        "from the model's repository). Off: such specs get 422.",
    )
    tenant_max_queued: int = Field(
        20,
        ge=1,
        description="Queued jobs one tenant may have; a submission over it gets 429 with Retry-After.",
    )
    tenant_max_running: int = Field(
        2,
        ge=1,
        description="Jobs of one tenant that run at once; further jobs wait queued (and count "
        "against `tenant_max_queued`).",
    )
    quota_retry_after_s: int = Field(
        30,
        ge=1,
        description="The Retry-After (seconds) of a 429 answer, and how long a worker waits "
        "before trying a job again whose tenant is at `tenant_max_running`.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Times a job is started before a job whose worker keeps vanishing is "
        "failed with the reason; a graceful drain (SIGTERM to a worker: the job stops at a "
        "checkpoint and is queued again) does not count.",
    )
    maintenance_interval_s: float = Field(
        10.0,
        ge=0,
        description="How often the API checks heartbeats (requeues or fails jobs whose "
        "worker vanished) and re-dispatches queued jobs the broker lost; 0: never.",
    )
    idempotency_ttl_h: float = Field(24.0, gt=0, description="Hours an `Idempotency-Key` is remembered.")
    signing_key_file: Path | None = Field(
        None,
        description="PEM file of the Ed25519 key that signs unlearning certificates; created "
        "(mode 0600) if missing. Empty: `<data_dir>/signing_key.pem`. Give every API replica the same file.",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow callback URLs that resolve to private, loopback or link-local "
        "addresses. Off: such callbacks are refused (at submission and again at delivery).",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, description="Seconds a callback may take to answer.")
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Tries of one callback before it is marked failed."
    )
    webhook_backoff_s: float = Field(
        10.0, gt=0, description="Wait before the first retry of a callback; doubled after each try."
    )
    webhook_backoff_max_s: float = Field(3600.0, gt=0, description="Longest wait between two tries.")
    webhook_poll_s: float = Field(
        1.0, gt=0, description="How often an API process looks for callbacks that are due."
    )
    log_level: str = Field("info", description="Log level of the API and the workers.")
    cache_dir: Path | None = Field(
        None,
        description="Where the engine keeps prepared built-in models (read by `lethe.core`). "
        "Empty: `~/.cache/lethe`.",
    )

    @field_validator("allowed_s3_buckets", "allowed_models", "worker_queues", "worker_devices", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("worker_devices")
    @classmethod
    def _devices(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"cpu", "cuda"})
        if unknown:
            raise ValueError(f"unknown devices {unknown}: use cpu and/or cuda")
        return value

    @field_validator("tenant_limits")
    @classmethod
    def _tenant_limits(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for tenant, overrides in value.items():
            unknown = sorted(set(overrides) - set(TENANT_LIMITS))
            if unknown:
                raise ValueError(
                    f"tenant {tenant!r}: {unknown} are not per-tenant limits: use {TENANT_LIMITS}"
                )
            negative = [name for name, number in overrides.items() if number < 0]
            if negative:
                raise ValueError(f"tenant {tenant!r}: {negative} must not be negative")
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
    def signing_key_path(self) -> Path:
        return (self.signing_key_file or self.data_dir / "signing_key.pem").expanduser().resolve()

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def hub_reachable(self) -> bool:
        """`hub_access`, else what HF_HUB_OFFLINE says (the variable huggingface_hub reads)."""
        if self.hub_access is not None:
            return self.hub_access
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")

    def for_tenant(self, tenant: str) -> Settings:
        """These settings with `tenant`'s overrides of the job limits (`tenant_limits`)."""
        overrides = self.tenant_limits.get(tenant)
        if not overrides:
            return self
        # integers stay integers: a count compared and shown in messages as "500000", not "500000.0"
        typed = {k: v if k in FLOAT_LIMITS else int(v) for k, v in overrides.items()}
        return self.model_copy(update=typed)


def settings_markdown() -> str:
    """The settings table of `docs/settings.md`."""
    lines = [
        "# Settings",
        "",
        "Environment variables read by the API, the workers and the CLI (`lethe.service.infra.settings`).",
        "Generated by `python -m lethe.service.infra.settings > docs/settings.md`; a test keeps it in step.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        shown = "" if default in (None, "") else str(default)
        lines.append(f"| `LETHE_{name.upper()}` | `{shown}` | {field.description} |".replace("``", "(empty)"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
