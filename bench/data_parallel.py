"""Seconds per optimizer step of data-parallel training (`model.devices`) on CPU, gloo.

The same global batch (`--batch` rows of each kind, `--accum` micro-batches) on 1 and on N
processes, each process one thread: one process stands for one device. Each process runs the
engine's `run_stage` (row sharing, gradient all-reduce, rank 0's decisions through the store) on
`yao` unlearning with a LoRA adapter on synthetic PKU-like rows; the first `--warmup` steps are not
counted. Prints one JSON line per world size: median step seconds, speed-up over 1 process, and
rank 0's CPU seconds per step (its compute: unlike wall time, not inflated by other processes on
the cores) and the share of its step spent not computing (waiting for the others, communicating).

    python bench/data_parallel.py --model tiny-llama
    python bench/data_parallel.py --model smollm2-135m-instruct --batch 4 --steps 6
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _stage(args: argparse.Namespace) -> Any:
    from unlearn_step import synthetic_data

    from lethe.core.data.examples import load_examples
    from lethe.core.methods import METHODS, default_refusals, terms_for
    from lethe.core.spec.fields import PromptFormat, TrainConfig
    from lethe.core.training.engine import Stage
    from lethe.core.training.rows import StageData

    ref = {"source": "unused.jsonl"}
    terms = terms_for(METHODS["yao"].stage(forget=ref, normal=ref, train={"steps": 1}))
    forget, normal = synthetic_data(args.batch * 8, random.Random(8888), args.forget_words)
    refusals = [e.prompt for e in load_examples(default_refusals())]
    data = StageData(forget=forget, normal=normal, refusals=refusals)
    train = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch, grad_accum=args.accum)
    return Stage("unlearn", terms, data, train, PromptFormat(max_length=args.seq), seed=0)


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, results: Any) -> None:
    import torch
    import torch.distributed as dist

    from lethe.core.models.loading import load_model
    from lethe.core.models.lora import attach_lora
    from lethe.core.models.reference import Reference
    from lethe.core.spec.fields import LoraSpec, ModelSpec
    from lethe.core.training import distributed as dp
    from lethe.core.training.engine import run_stage
    from lethe.core.training.hooks import Progress, RunHooks

    torch.set_num_threads(1)
    if world > 1:
        store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0, timeout=timedelta(seconds=300))
        dp.init(rank, world, store, lambda: None, "gloo")
    model, tok = load_model(ModelSpec(name=args.model, device="cpu"))
    model = attach_lora(model, LoraSpec(rank=16, alpha=32, target_modules=["q_proj", "v_proj"]), seed=0)
    marks: list[tuple[float, float]] = []

    def on_progress(_: Progress) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    marks.append((time.perf_counter(), time.process_time()))
    run_stage(model, tok, _stage(args), RunHooks(on_progress=on_progress), Reference(model))
    if rank == 0:
        counted = marks[args.warmup :]
        wall = [b[0] - a[0] for a, b in zip(counted, counted[1:], strict=False)]
        cpu = [b[1] - a[1] for a, b in zip(counted, counted[1:], strict=False)]
        results.put({"step_s": statistics.median(wall), "cpu_s": statistics.median(cpu)})
    dp.shutdown()


def measure(world: int, args: argparse.Namespace) -> dict[str, float]:
    import socket

    with socket.socket() as probe:  # a free port for this measurement's store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=rank_main, args=(r, world, port, args, results)) for r in range(world)]
    for p in procs:
        p.start()
    found = results.get(timeout=1800)
    for p in procs:
        p.join()
    return dict(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--batch", type=int, default=8, help="rows of each kind per micro-batch (global)")
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--forget-words", type=int, default=60)
    parser.add_argument("--steps", type=int, default=12, help="steps timed (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worlds", default="1,2")
    args = parser.parse_args()
    base = None
    for world in (int(w) for w in args.worlds.split(",")):
        found = measure(world, args)
        base = base or found["step_s"]
        idle = max(0.0, 1 - found["cpu_s"] / found["step_s"])
        row = {"model": args.model, "processes": world, "batch": args.batch, "accum": args.accum}
        row |= {"seq": args.seq, "step_s": round(found["step_s"], 4)}
        row |= {"speedup": round(base / found["step_s"], 2)}
        row |= {"rank0_cpu_s": round(found["cpu_s"], 4), "rank0_not_computing": round(idle, 2)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
