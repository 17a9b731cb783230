"""Data parallelism within one job: `model.devices` processes (ranks), each with the whole model.

Every optimizer step's rows are shared out among the ranks (`share_of`) and the trainable
gradients are summed across them before the update (`summed_gradients`), so every rank applies
the update one process would have applied at the same global batch and the weights stay identical.
Rank 0 is the process that runs the job: it alone evaluates, writes the run folder and answers
the caller's hooks (cancel, pause, fence); its decisions reach the other ranks through `agree`.

Two kinds of waiting, on purpose. Collectives inside a step (gradients, logged values, weights)
go through `torch.distributed` with the group's timeout: every rank is computing the same step, so
a rank that does not arrive in time is dead or hung, and the timeout turns a hang into an error.
Between steps rank 0 may work alone for a long time (evaluation, checkpoint uploads), so `agree`
waits on the rendezvous store instead, with no timeout but a liveness check of the other processes
(`Group.alive`): a dead rank ends the wait at once, a slow rank 0 never does.

Why an explicit all-reduce and not `DistributedDataParallel`: a micro-batch back-propagates group by
group of row kinds (several forwards and backwards per micro-batch, step.py) and SAM needs the
summed gradient in the middle of a step (engine.py); DDP's reducer assumes one backward per forward
and fires during backward. The sum below is what DDP computes, bucketed the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from lethe.core.spec.fields import TrainConfig

TIMEOUT_ENV = "LETHE_DIST_TIMEOUT_S"  # seconds a collective may wait for a rank (default 300)
DEFAULT_TIMEOUT_S = 300.0
BUCKET_ELEMENTS = 1 << 22  # gradient elements per all-reduce (16 MB of fp32, DDP's order of size)


class RankFailed(RuntimeError):
    """A rank of a data-parallel job died, hung past the timeout or fell out of step."""


@dataclass
class Group:
    """This process's place in the job's process group."""

    rank: int
    world: int
    store: Any  # torch.distributed.Store: the rendezvous store that `agree` waits on
    alive: Callable[[], None]  # raises RankFailed when another process of the job is gone
    sequence: int = field(default=0)  # `agree` calls so far: every rank makes the same calls


_GROUP: Group | None = None


def current() -> Group | None:
    return _GROUP


def rank() -> int:
    return _GROUP.rank if _GROUP is not None else 0


def world_size() -> int:
    return _GROUP.world if _GROUP is not None else 1


def is_main() -> bool:
    """Whether this process evaluates, writes files and answers hooks (rank 0, or no group)."""
    return rank() == 0


def collective_timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))


# A rank that starts (a new Python process importing torch and loading the model) on a loaded
# machine can take far longer than a step: until every rank has met once, waits are at least this
# long. A rank that dies while starting is still seen at once (`Group.alive`).
STARTUP_MIN_S = 120.0


def startup_timeout_s() -> float:
    return max(collective_timeout().total_seconds(), STARTUP_MIN_S)


def init(rank_: int, world: int, store: Any, alive: Callable[[], None], backend: str) -> Group:
    """Join the job's process group (every rank must call this; it returns once all have)."""
    global _GROUP
    dist.init_process_group(backend, store=store, rank=rank_, world_size=world, timeout=collective_timeout())
    _GROUP = Group(rank_, world, store, alive)
    return _GROUP


def shutdown() -> None:
    """Leave the process group (a worker process runs many jobs: the next one makes its own)."""
    global _GROUP
    _GROUP = None
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # a group broken by a dead rank may fail to tear down; it is gone anyway
            pass


def split_error(train: TrainConfig, world: int) -> str | None:
    """Why `world` ranks cannot share a step of `train` evenly, or None when they can."""
    if train.grad_accum % world == 0 or train.batch_size % world == 0:
        return None
    return (
        f"model.devices {world} must divide train.batch_size ({train.batch_size}) or "
        f"train.grad_accum ({train.grad_accum}): each rank takes an equal share of every step"
    )


@dataclass(frozen=True)
class Share:
    """This rank's micro-batches of one step: their numbers, at `batch_size` rows of each kind,
    out of `accum` micro-batches of that size that make the whole step."""

    batch_size: int
    accum: int
    micros: list[int]


def share_of(train: TrainConfig, step: int) -> Share:
    """The rows this rank scores in `step`. Rows are a pure function of their stream position
    (rows.py), so the step's `grad_accum` × `batch_size` rows can be cut into `accum` smaller
    micro-batches; every term is a mean over rows, so the mean over the pieces is the one-process
    step. Whole micro-batches are shared out when `grad_accum` divides evenly (bigger forwards),
    else each micro-batch's rows. One process: the step's own micro-batches, unchanged."""
    world, accum, size = world_size(), train.grad_accum, train.batch_size
    if world > 1 and accum % world != 0:
        accum, size = accum * world, size // world
    first = step * accum
    return Share(size, accum, list(range(first + rank(), first + accum, world)))


def _buckets(tensors: list[torch.Tensor]) -> Iterator[list[int]]:
    """Indices of `tensors` in groups of one dtype and device, about BUCKET_ELEMENTS each."""
    bucket: list[int] = []
    size = 0
    for i, t in enumerate(tensors):
        if bucket and (size + t.numel() > BUCKET_ELEMENTS or tensors[bucket[0]].dtype != t.dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(i)
        size += t.numel()
    if bucket:
        yield bucket


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor summed over the ranks, in few collectives (flattened buckets)."""
    out = list(tensors)
    for bucket in _buckets(tensors):
        flat = torch.cat([tensors[i].reshape(-1) for i in bucket])
        dist.all_reduce(flat)
        offset = 0
        for i in bucket:
            n = tensors[i].numel()
            out[i] = flat[offset : offset + n].view_as(tensors[i])
            offset += n
    return out


@contextmanager
def summed_gradients(model: Any) -> Iterator[None]:
    """Sum over the ranks the gradients accumulated in this block, leaving earlier ones as they
    were (a SAM step adds its retain gradient to an already summed forget gradient)."""
    if _GROUP is None:
        yield
        return
    params = [p for p in model.parameters() if p.requires_grad]
    kept = [p.grad for p in params]
    for p in params:
        p.grad = None
    yield
    # a rank whose rows reached no path to a parameter still sends zeros: every rank sends alike
    mine = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p, total, old in zip(params, all_reduce_sum(mine), kept, strict=True):
        p.grad = total if old is None else old + total


def reduce_values(values: dict[str, float]) -> dict[str, float]:
    """Logged values summed over the ranks (each rank's are its share of the step's mean)."""
    if _GROUP is None:
        return values
    keys = sorted(values)  # every rank logs the same terms
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
    summed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    totals = dict(zip(keys, summed.tolist(), strict=True))
    return {k: totals[k] for k in values}


def sync_weights(model: Any) -> None:
    """Rank 0's trainable weights on every rank (after rank 0 alone loaded a selected checkpoint;
    at a stage's start, as DDP does, so ranks never drift from one start)."""
    if _GROUP is None:
        return
    agree("weights", 0)  # rank 0 may evaluate first: wait on the store, not in a collective
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for bucket in _buckets(params):
            flat = torch.cat([params[i].detach().reshape(-1) for i in bucket])
            dist.broadcast(flat, src=0)
            offset = 0
            for i in bucket:
                n = params[i].numel()
                params[i].copy_(flat[offset : offset + n].view_as(params[i]))
                offset += n


def agree(label: str, value: int) -> int:
    """Rank 0's `value` on every rank, once every rank has reached the same `agree` call. Waits
    without a timeout (rank 0 may evaluate for an hour) but not on a dead process."""
    group = _GROUP
    if group is None:
        return value
    group.sequence += 1
    base = f"agree/{group.sequence}"
    group.store.set(f"{base}/{group.rank}", label)
    if group.rank != 0:
        wait_keys(group, [base])
        return int(group.store.get(base))
    arrived = [f"{base}/{r}" for r in range(1, group.world)]
    # the others only ever wait for rank 0, never work alone: one that does not come is hung
    first = group.sequence == 1  # the ranks meet for the first time: some may still be starting
    wait_keys(group, arrived, startup_timeout_s() if first else collective_timeout().total_seconds(), label)
    for r, key in enumerate(arrived, start=1):
        seen = group.store.get(key).decode()
        if seen != label:
            raise RankFailed(f"ranks out of step: rank {r} at {seen!r}, rank 0 at {label!r}")
    group.store.set(base, str(value))
    if group.sequence > 1:  # every rank has left the previous call: drop its keys
        previous = f"agree/{group.sequence - 1}"
        for key in [previous, f"{previous}/0", *(f"{previous}/{r}" for r in range(1, group.world))]:
            group.store.delete_key(key)
    return value


def wait_keys(group: Group, keys: list[str], timeout_s: float | None = None, label: str = "") -> None:
    """Until `keys` exist in the store, or RankFailed after `timeout_s`. Polled (a timed-out store
    wait logs a warning each time), briefly at first: the others are usually a moment away."""
    pause, deadline = 0.0002, None if timeout_s is None else time.monotonic() + timeout_s
    while not group.store.check(keys):
        group.alive()
        if deadline is not None and time.monotonic() > deadline:
            raise RankFailed(f"a rank did not reach {label!r} within {timeout_s:.0f} s (hung?)")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
