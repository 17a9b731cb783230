"""Writing the self-describing run folder. Every file is written atomically (temp + rename).

While `fenced(check)` is active (`run_job` installs its hooks' fence), every write of this module
calls `check` first, so a run that may no longer write (its service claim was taken over) raises
instead of overwriting the files of the attempt that replaced it. The check is a context variable:
runs on other threads (the embedded service's workers) keep their own.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from lethe.core.spec.job import JobSpec, dump_spec

PACKAGES = ("lethe", "torch", "transformers", "peft", "tokenizers", "pydantic", "sacrebleu", "rouge-score")


_FENCE: ContextVar[Callable[[], None] | None] = ContextVar("lethe_run_folder_fence", default=None)


class RunFolderError(ValueError):
    """The output folder belongs to a different job."""


@contextmanager
def fenced(check: Callable[[], None] | None) -> Iterator[None]:
    """Call `check` before every write of this module in this block (on this thread)."""
    token = _FENCE.set(check)
    try:
        yield
    finally:
        _FENCE.reset(token)


def check_fence() -> None:
    check = _FENCE.get()
    if check is not None:
        check()


def write_text(path: Path, text: str) -> None:
    check_fence()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(row, default=str) + "\n" for row in rows))


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(spec: JobSpec) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions(),
        "seed": spec.seed,
        "device": spec.model.device,
        "world_size": spec.model.devices,  # data-parallel ranks (processes) that trained the job
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def start(out: Path, spec: JobSpec) -> None:
    """Create the folder with spec.yaml and env.json; refuse a folder of another job's spec."""
    out.mkdir(parents=True, exist_ok=True)
    resolved = dump_spec(spec)
    existing = out / "spec.yaml"
    if existing.exists() and existing.read_text(encoding="utf-8") != resolved:
        raise RunFolderError(
            f"{out} holds a run of a different spec: run this spec in another (or an empty) folder"
        )
    write_text(existing, resolved)
    if not (out / "env.json").exists():
        write_json(out / "env.json", environment(spec))


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Send the `lethe` loggers' records to the run's log file while the run lasts."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lethe")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def save_weights(model: Any, out: Path, is_lora: bool, base_model: str | None = None) -> Path:
    """Save the adapter (`adapter/`, loadable by peft alone) or the full model (`model/`).

    `base_model`, when given, is written as the adapter config's `base_model_name_or_path`, for
    a base peft cannot name itself (see `lethe.core.models.loading.base_reference`)."""
    check_fence()
    target = out / ("adapter" if is_lora else "model")
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial, safe_serialization=True)
    if is_lora and base_model is not None:
        config_path = partial / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        write_json(config_path, {**config, "base_model_name_or_path": base_model})
    check_fence()  # saving took a while: the job may have been taken over meanwhile
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    return target


def write_metrics(
    out: Path, before: dict, after: dict, comparison: dict, judge: dict[str, Any] | None, result: Any
) -> dict[str, Any]:
    """metrics.json: before/after metric maps, their comparison, per-example results, the run."""
    metrics = {
        "before": before["metrics"],
        "after": after["metrics"],
        "comparison": comparison,
        "judge": judge,
        "training": {"steps": result.steps, "stopped_reason": result.stopped_reason},
        "per_example": {"before": before["per_example"], "after": after["per_example"]},
    }
    write_json(out / "metrics.json", metrics)
    return metrics
