"""Resumable checkpoints: trainable weights, optimizer, schedule, step and the log so far; and
the run's `train_log.jsonl`, one row per step, cut back to a checkpoint when a run resumes.

A checkpoint folder is written under a temporary name and renamed into place, so a crash while
writing never leaves a checkpoint that looks complete. Data order and dropout are functions of
the step (see train.py), so these four things are all a resumed run needs to continue exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from lethe.core.models.weights import load_trainable_

STATE_FILE = "state.pt"
META_FILE = "meta.json"


def save_checkpoint(
    folder: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    step: int,
    log: list[dict[str, Any]],
    complete: bool = False,
    reason: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; `complete` marks the stage's final state; `extra` is kept
    in meta.json for the caller (the evaluations of checkpoint selection)."""
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    torch.save(
        {"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
        partial / STATE_FILE,
    )
    meta = {"step": step, "complete": complete, "reason": reason, "log": log, "extra": extra or {}}
    (partial / META_FILE).write_text(json.dumps(meta))
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint with the highest step under `root`, ignoring half-written ones."""
    if not root.exists():
        return None
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and (p / META_FILE).exists() and not p.name.endswith(".partial")
    ]
    if not found:
        return None
    # on a tie the stage's final checkpoint wins: it records why the stage stopped
    return max(found, key=lambda p: (read_meta(p)["step"], read_meta(p)["complete"]))


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / META_FILE).read_text())


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> tuple[int, list[dict]]:
    """Restore a checkpoint into model, optimizer and scheduler; return (step, log)."""
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    load_trainable_(model, state["model"], f"checkpoint {folder}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    meta = read_meta(folder)
    return int(meta["step"]), list(meta["log"])


def append_log_row(path: Path | None, row: dict[str, Any]) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def rewrite_log(path: Path | None, kept: list[dict[str, Any]]) -> None:
    """Keep other stages' rows and this stage's rows up to the checkpoint, written atomically."""
    if path is None or not path.exists():
        return
    stages = {row["stage"] for row in kept}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = [r for r in rows if r.get("stage") not in stages] + kept
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
