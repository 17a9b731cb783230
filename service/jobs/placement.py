"""Which queue a job goes to: one whose workers can run it, or a refusal at submission.

A queue fits a job when its workers have the job's kind of device (`model.device`: `cuda`, `cpu`,
or `auto`: GPU queues first; a quantized base needs `cuda`), at least `model.devices` devices per
worker (data parallel: one process per device), and per device at least the job's memory estimate
(`lethe.core.models.memory`). The first queue that fits, in the order of `LETHE_QUEUE_CAPACITY`,
takes the job; a job that fits none is refused (422) with the reason, never left queued.

Without `LETHE_QUEUE_CAPACITY` the queues are today's: `gpu` (CUDA) where `gpu_workers` or
`worker_devices` says there are GPU workers, and `cpu`; `auto` goes to `gpu` only with
`gpu_workers`; device counts and memory are not checked (nothing says what the workers have).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lethe.core.models.errors import ModelError
from lethe.core.models.memory import MemoryEstimate, Workload, estimate_memory, model_shape
from lethe.core.spec.fields import TrainConfig
from lethe.core.spec.job import JobSpec
from lethe.service.infra.capacity import QueueCapacity, capacity_text
from lethe.service.infra.errors import Problem
from lethe.service.infra.settings import Settings
from lethe.service.jobs import policy

log = logging.getLogger(__name__)
UNKNOWN = 2**62  # devices and memory of a queue no setting describes: never the reason to refuse


@dataclass(frozen=True)
class Placement:
    """The chosen queue (None when refused), the reasons for a refusal, and the estimate."""

    queue: str | None
    problems: list[Problem] = field(default_factory=list)
    estimate: MemoryEstimate | None = None
    note: str = ""  # where the estimate came from, or why there is none

    def describe(self) -> str:
        """The estimate and its source (or why there is none), as the queued event tells it."""
        return _told(self.estimate, self.note)


def queues(settings: Settings) -> dict[str, QueueCapacity]:
    """The queues in placement order: `queue_capacity`, else today's from the device settings."""
    if settings.queue_capacity:
        return settings.queue_capacity
    unknown = {"devices": 64, "memory_bytes": UNKNOWN}
    gpu, cpu = QueueCapacity(kind="cuda", **unknown), QueueCapacity(kind="cpu", **unknown)
    if settings.gpu_workers:
        return {"gpu": gpu, "cpu": cpu}
    # a GPU seen (or declared) without gpu_workers takes `cuda` jobs only: `auto` stays on cpu
    return {"cpu": cpu, "gpu": gpu} if "cuda" in policy.worker_devices(settings) else {"cpu": cpu}


def wanted_kinds(spec: JobSpec) -> tuple[str, ...]:
    if spec.model.quantize is not None or spec.model.device == "cuda":
        return ("cuda",)
    return ("cpu",) if spec.model.device == "cpu" else ("cuda", "cpu")


def job_estimate(spec: JobSpec) -> tuple[MemoryEstimate | None, str]:
    """The largest per-device estimate over the job's training stages, and its source; None (with
    why) when the model's configuration is not found here."""
    from lethe.core.methods import terms_for

    try:
        shape = model_shape(spec.model.name, spec.model.revision)
    except ModelError as err:
        return None, f"memory not checked: {err}"
    reference = any(t.needs_reference for t in terms_for(spec.unlearn))
    kinds = 2 if spec.unlearn.normal is not None else 1
    stages: list[tuple[TrainConfig, int, bool]] = [(spec.unlearn.train, kinds, reference)]
    if spec.finetune is not None:
        stages.append((spec.finetune.train, 1, False))
    estimates = [
        estimate_memory(
            shape,
            spec.model,
            spec.lora,
            Workload(
                _per_device(train, spec.model.devices) * rows,
                spec.format.max_length,
                train.gradient_checkpointing,
                ref,
            ),
        )
        for train, rows, ref in stages
    ]
    return max(estimates, key=lambda e: e.total), f"{shape.parameters:,} parameters from {shape.source}"


def _per_device(train: TrainConfig, devices: int) -> int:
    """Rows of a micro-batch on one device: data parallelism splits the batch where it divides
    (else it splits the accumulation steps, and each device takes whole micro-batches)."""
    return train.batch_size // devices if train.batch_size % devices == 0 else train.batch_size


def place(spec: JobSpec, settings: Settings) -> Placement:
    """The first queue whose workers can run the job, or the reasons none can."""
    device = policy.device_problem(spec, settings)
    if device is not None:  # with a quantized base, its own field says why too
        return Placement(None, [device, *([_kind_problem(spec, settings)] if spec.model.quantize else [])])
    kinds = wanted_kinds(spec)
    ordered = [(name, c) for name, c in queues(settings).items() if c.kind in kinds]
    if settings.queue_capacity:  # described workers: `auto` tries GPU queues first
        ordered.sort(key=lambda item: kinds.index(item[1].kind))
    if not ordered:
        return Placement(None, [_kind_problem(spec, settings)])
    estimate, note = (
        job_estimate(spec)
        if settings.queue_capacity
        else (None, "memory not checked: no LETHE_QUEUE_CAPACITY")
    )
    enough = [(name, c) for name, c in ordered if c.devices >= spec.model.devices]
    if not enough:
        return Placement(None, [_devices_problem(spec, ordered)], estimate, note)
    for name, capacity in enough:
        if estimate is None or estimate.total <= capacity.memory_bytes:
            log.info("job %s goes to queue %s (%s)", spec.name, name, _told(estimate, note))
            return Placement(name, [], estimate, note)
    assert estimate is not None  # every queue fits a job without an estimate
    return Placement(None, [_memory_problem(estimate, note, enough)], estimate, note)


def _told(estimate: MemoryEstimate | None, note: str) -> str:
    return note if estimate is None else f"estimated {estimate.describe()}; {note}"


def _kind_problem(spec: JobSpec, settings: Settings) -> Problem:
    """A quantized base where no queue has GPU workers (a plain `cuda` is `device_problem`'s)."""
    described = capacity_text(settings.queue_capacity) if settings.queue_capacity else "none"
    return Problem(
        "model.quantize",
        f"{spec.model.quantize!r} base weights need a GPU worker (bitsandbytes runs on CUDA only), "
        f"and no queue of this server has one (LETHE_QUEUE_CAPACITY: {described}; LETHE_WORKER_DEVICES: "
        f"{','.join(policy.worker_devices(settings))}): set model.quantize to null",
    )


def _devices_problem(spec: JobSpec, fitting: list[tuple[str, QueueCapacity]]) -> Problem:
    name, most = max(fitting, key=lambda item: item[1].devices)
    return Problem(
        "model.devices",
        f"{spec.model.devices} devices asked for, and the workers with the most ({name}: "
        f"{most.describe()} per device) have {most.devices}: ask for at most {most.devices}",
    )


def _memory_problem(estimate: MemoryEstimate, note: str, fitting: list[tuple[str, QueueCapacity]]) -> Problem:
    name, largest = max(fitting, key=lambda item: item[1].memory_bytes)
    return Problem(
        "model",
        f"the job needs about {estimate.describe()} per device ({note}), more than any queue's "
        f"workers have: the largest is {name} ({largest.describe()} per device): use a smaller "
        "model, model.quantize, "
        "train.gradient_checkpointing, a smaller train.batch_size or format.max_length",
    )
