"""Ranks 1..N-1 of a data-parallel job: `python -m lethe.core.run.ranks OUT RANK WORLD PORT
CHECKPOINT_EVERY BACKEND PARENT_PID`, started by rank 0 (launch.py).

Such a rank trains as rank 0 does (the same model, adapter, data and stages, built by the same
deterministic code of the pipeline from the spec rank 0 wrote to the run folder) and does nothing
else: no evaluation, no generation, no file written. The model's own answers to the forget and
normal prompts, which rank 0 alone generates, it reads from the run folder once rank 0 has
written them (`agree`). It ends after the unlearning stage, or on rank 0's pause or cancel (exit
code 0), or when rank 0's process is gone (exit code 1).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from lethe.core.data.examples import DataError, Example
from lethe.core.models.loading import load_model
from lethe.core.run import pipeline
from lethe.core.run.launch import HOST
from lethe.core.spec.job import JobSpec, parse_spec
from lethe.core.training import distributed as dp
from lethe.core.training.distributed import RankFailed
from lethe.core.training.hooks import Cancelled, Paused, RunHooks

log = logging.getLogger("lethe.core.run.ranks")
PARENT_POLL_S = 1.0


def follow(spec: JobSpec, out: Path, checkpoint_every: int) -> None:
    """The training part of `pipeline._run`, in the same order of collective calls."""
    torch.manual_seed(spec.seed)
    model, tokenizer = load_model(spec.model)
    spec = pipeline.render_templates(spec, tokenizer)
    forget, normal = pipeline._load(spec.unlearn.forget), pipeline._load(spec.unlearn.normal)
    model = pipeline.trainable_model(spec, model)
    hooks = RunHooks(checkpoint_every=checkpoint_every)  # the same stages: checkpoints are read
    if spec.finetune is not None:
        pipeline.finetune(spec, model, tokenizer, out, hooks)
    dp.agree(pipeline.UNLEARN_DATA, 0)
    if spec.unlearn.forget_answers_from == "model":
        forget = _answers(out / "forget_generated.jsonl")
    if spec.unlearn.normal_answers_from == "model" and normal:
        normal = _answers(out / "normal_generated.jsonl")
    stage, reference, _, _ = pipeline.unlearn_stage(spec, model, forget, normal, out, hooks)
    pipeline.run_stage(model, tokenizer, stage, hooks, reference)


def _answers(path: Path) -> list[Example]:
    if not path.exists():
        raise DataError(f"rank 0 wrote no {path.name}")
    return pipeline.read_answers(path)


def _watch_parent(parent: int) -> None:
    """End this process when rank 0's is gone, even inside a collective (a daemon thread)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="lethe-rank-parent", daemon=True).start()


def _alive(parent: int) -> None:
    if os.getppid() != parent:
        raise RankFailed("rank 0 is gone")


def main(argv: list[str]) -> int:
    out, rank, world, port, every, backend, parent = argv
    out_dir, rank_, world_, parent_ = Path(out), int(rank), int(world), int(parent)
    form = f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=form)
    _watch_parent(parent_)
    spec = parse_spec(yaml.safe_load((out_dir / "spec.yaml").read_text(encoding="utf-8")))
    if backend == "gloo":  # the ranks share the cores one process would have used
        torch.set_num_threads(max(1, torch.get_num_threads() // world_))
    if backend == "nccl":
        torch.cuda.set_device(0)  # the launcher left this rank one visible GPU
    timeout = dp.collective_timeout()
    store = dist.TCPStore(HOST, int(port), world_, is_master=False, timeout=timeout)
    store.set(f"ready/{rank_}", "1")
    dp.init(rank_, world_, store, lambda: _alive(parent_), backend)
    log.info("rank %d of %d joined (%s)", rank_, world_, backend)
    try:
        follow(spec, out_dir, int(every))
        log.info("training done")
    except (Cancelled, Paused) as stop:
        log.info("rank 0 stopped the job: %s", stop)
    finally:
        dp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
