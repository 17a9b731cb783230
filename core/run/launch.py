"""Starting a data-parallel job (`model.devices: N`) from the process that runs it.

That process is rank 0: it keeps the caller's hooks, evaluates and writes the run folder. Ranks
1..N-1 are subprocesses (`python -m lethe.core.run.ranks`), not multiprocessing children: a Celery
prefork pool process is daemonic and may not have those. They meet on a TCP store that rank 0
hosts on a free port (chosen by the OS, no race), and their output goes to `rank-<r>.log` in the
run folder. Rank 0 watches them: a rank that exits while the others wait ends the job with
`RankFailed` (the service then fails or retries the job, which resumes from its last
checkpoint), and whatever ends rank 0's run terminates the other ranks; never a hang.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist

from lethe.core.spec.job import JobSpec, SpecError
from lethe.core.training import distributed as dp
from lethe.core.training.distributed import RankFailed

log = logging.getLogger(__name__)
HOST = "127.0.0.1"  # one machine: ranks of a job never span hosts
SETTLE_S = 2.0  # after rank 0's run failed: how long a rank that failed may take to be seen dead
EXIT_GRACE_S = 30.0  # how long the other ranks get to end by themselves after rank 0's run


def backend_for(spec: JobSpec, world: int) -> str:
    """nccl when the model goes to GPUs and there is one per rank, else gloo (CPU)."""
    on_gpu = spec.model.device != "cpu" and torch.cuda.is_available()
    return "nccl" if on_gpu and torch.cuda.device_count() >= world else "gloo"


def check_shares(spec: JobSpec, world: int) -> None:
    """Refuse, before anything starts, a stage whose steps `world` ranks cannot share evenly."""
    stages = [spec.unlearn.train] + ([spec.finetune.train] if spec.finetune is not None else [])
    for train in stages:
        error = dp.split_error(train, world)
        if error:  # the spec's validator refuses it too; a spec built in code may skip that
            raise SpecError(error)


@contextmanager
def data_parallel(spec: JobSpec, out: Path, checkpoint_every: int = 0) -> Iterator[None]:
    """Run the block as rank 0 of `spec.model.devices` ranks (no-op for one device)."""
    world = spec.model.devices
    if world == 1 or dp.current() is not None:
        yield
        return
    check_shares(spec, world)
    backend = backend_for(spec, world)
    store = dist.TCPStore(
        HOST, 0, world, is_master=True, timeout=dp.collective_timeout(), wait_for_workers=False
    )
    ranks = [_start(r, world, store.port, out, checkpoint_every, backend) for r in range(1, world)]
    threads = torch.get_num_threads()
    try:
        alive = _watch(ranks)
        _wait_ready(store, world, alive)
        dp.init(0, world, store, alive, backend)
        if backend == "gloo":  # N ranks share the cores one process would have used
            torch.set_num_threads(max(1, threads // world))
        log.info("data parallel: %d ranks (%s)", world, backend)
        yield
        _join(ranks)
    except BaseException as err:
        dead = _settled(ranks)
        if dead and not isinstance(err, RankFailed):
            raise RankFailed(f"{dead}; the job stops (its last checkpoint is kept)") from err
        if isinstance(err, dist.DistError):  # a collective timed out or lost a peer
            raise RankFailed(f"data-parallel training failed: {err}") from err
        raise
    finally:
        torch.set_num_threads(threads)
        _stop(ranks)
        dp.shutdown()


def _start(
    rank: int, world: int, port: int, out: Path, checkpoint_every: int, backend: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if backend == "nccl":  # each rank sees its own GPU as cuda:0; rank 0 keeps the first
        visible = env.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        env["CUDA_VISIBLE_DEVICES"] = devices[rank]
    command = [sys.executable, "-m", "lethe.core.run.ranks", str(out), str(rank), str(world)]
    command += [str(port), str(checkpoint_every), backend, str(os.getpid())]
    with (out / f"rank-{rank}.log").open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)


def _dead(ranks: list[subprocess.Popen[bytes]], failed_only: bool = False) -> str | None:
    """Which rank has ended (or failed) and how, or None while all run."""
    for r, process in enumerate(ranks, start=1):
        code = process.poll()
        if code is not None and not (failed_only and code == 0):
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            return f"rank {r} of {len(ranks) + 1} ended ({how}; see rank-{r}.log){_last_line(process, r)}"
    return None


def _last_line(process: subprocess.Popen[bytes], rank: int) -> str:
    """The last line the rank wrote (its error, usually), for a message read far from its log."""
    log_file = Path(cast(list[str], process.args)[3]) / f"rank-{rank}.log"  # python -m ranks OUT
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f": {lines[-1].strip()[:300]}" if lines else ""


def _settled(ranks: list[subprocess.Popen[bytes]]) -> str | None:
    """Which rank failed, if one did, given a moment: gloo sees a killed peer's sockets close
    before its process can be reaped. On a pause or cancel the others end cleanly (exit code 0)."""
    deadline = time.monotonic() + SETTLE_S
    while (dead := _dead(ranks, failed_only=True)) is None and time.monotonic() < deadline:
        if all(process.poll() is not None for process in ranks):
            return None
        time.sleep(0.05)
    return dead


def _watch(ranks: list[subprocess.Popen[bytes]]) -> Callable[[], None]:
    def alive() -> None:
        dead = _dead(ranks)
        if dead:
            raise RankFailed(dead)

    return alive


def _wait_ready(store: dist.TCPStore, world: int, alive: Callable[[], None]) -> None:
    """Until every rank has started (imports, store connection) and is about to join the group:
    the group's own rendezvous would wait the whole timeout for a rank that died starting."""
    group = dp.Group(0, world, store, alive)
    dp.wait_keys(group, [f"ready/{r}" for r in range(1, world)], dp.startup_timeout_s(), "ready")


def _join(ranks: list[subprocess.Popen[bytes]]) -> None:
    """The other ranks end after their last stage; wait a little for them (then `_stop`)."""
    for r, process in enumerate(ranks, start=1):
        try:
            code = process.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("rank %d still running after the job: terminated", r)
            continue
        if code != 0:  # the run folder is complete: a late failure is logged, not fatal
            log.warning("rank %d ended with exit code %s after the job (see rank-%d.log)", r, code, r)


def _stop(ranks: list[subprocess.Popen[bytes]]) -> None:
    for process in ranks:
        if process.poll() is None:
            process.terminate()
            process.send_signal(signal.SIGCONT)  # a stopped (hung) rank would sit on the SIGTERM
    for process in ranks:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
