"""Data-parallel training within a job (`model.devices: 2`): two gloo processes on CPU train as one
process does at the same global batch, a killed rank ends the job with an error in bounded time
(no hang), and the job then resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from toy_data import tiny_spec_data

from lethe.core.run.pipeline import run_job
from lethe.core.spec.fields import TrainConfig
from lethe.core.spec.job import JobSpec, SpecError, parse_spec
from lethe.core.training import distributed as dp
from lethe.core.training.distributed import RankFailed
from lethe.core.training.hooks import Cancelled, Paused, Progress, RunHooks

STEPS = 5


def small_spec(devices: int, **unlearn_train: Any) -> JobSpec:
    """examples/tiny.yaml, shortened: 2 fine-tuning steps, STEPS unlearning steps, short rows."""
    data = tiny_spec_data()
    data["model"]["devices"] = devices
    data["finetune"]["train"].update(steps=2, batch_size=4)
    data["unlearn"]["train"].update({"steps": STEPS, "batch_size": 2, **unlearn_train})
    data["format"] = {"max_length": 64}
    data["eval"].update(max_examples=2, generation={"max_new_tokens": 2})
    return parse_spec(data)


def train_log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def assert_same_training(one: Path, two: Path) -> None:
    """The same steps with the same losses, and the same adapter, within float tolerance."""
    rows_one, rows_two = train_log(one), train_log(two)
    assert [(r["stage"], r["step"]) for r in rows_two] == [(r["stage"], r["step"]) for r in rows_one]
    for a, b in zip(rows_one, rows_two, strict=True):
        for key in ("loss", "forget_nll", "grad_norm"):
            if a.get(key) is not None:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["stage"], a["step"], key)
    first, second = adapter(one), adapter(two)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-3, atol=2e-4, msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dp") / "one"
    run_job(small_spec(1), out)
    return out


def test_two_processes_train_as_one_at_the_same_global_batch(one_process: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    run_job(small_spec(2), out)
    assert_same_training(one_process, out)
    assert json.loads((one_process / "env.json").read_text())["world_size"] == 1
    assert json.loads((out / "env.json").read_text())["world_size"] == 2
    assert "rank 1 of 2 joined (gloo)" in (out / "rank-1.log").read_text()
    assert dp.current() is None  # the group is gone: the process may run the next job


def _ranks_of_this_process() -> list[int]:
    """Process ids of the data-parallel ranks this process started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"lethe.core.run.ranks" in command:
            found.append(int(entry.name))
    return found


def _kill_rank_during(
    stage: str, step: int, delay_s: float, sig: int = signal.SIGKILL, sent: list[float] | None = None
) -> Callable[[Progress], None]:
    """An on_progress hook that, after `step` of `stage`, signals rank 1 `delay_s` later: from a
    thread, so that it lands wherever rank 0 then is (computing, in a collective, or waiting).
    The time it was sent goes into `sent`."""

    def signal_rank(pid: int) -> None:
        os.kill(pid, sig)
        (sent if sent is not None else []).append(time.monotonic())

    def on_progress(p: Progress) -> None:
        if p.stage == stage and p.step == step and p.unit == "step":
            (pid,) = _ranks_of_this_process()
            threading.Timer(delay_s, signal_rank, (pid,)).start()

    return on_progress


@pytest.mark.parametrize("delay_s", [0.0, 0.02])  # between steps (store), in a collective (gloo)
def test_a_killed_rank_fails_the_job_quickly_and_it_resumes_from_its_checkpoint(
    one_process: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay_s: float
) -> None:
    monkeypatch.setenv(dp.TIMEOUT_ENV, "20")  # the ranks inherit it: a hang would end in 20 s
    out, spec = tmp_path / "killed", small_spec(2)
    sent: list[float] = []
    hooks = RunHooks(checkpoint_every=2, on_progress=_kill_rank_during("unlearn", 3, delay_s, sent=sent))
    with pytest.raises(RankFailed, match=r"rank 1 of 2 ended \(signal 9; see rank-1.log\)"):
        run_job(spec, out, hooks)
    assert time.monotonic() - sent[0] < 10  # dead, not hung: no timeout was needed
    assert dp.current() is None and not _ranks_of_this_process()
    assert max(r["step"] for r in train_log(out) if r["stage"] == "unlearn") <= 4
    progress: list[Progress] = []
    run_job(spec, out, RunHooks(checkpoint_every=2, on_progress=progress.append))  # the retry
    trained = [(p.stage, p.step) for p in progress if p.unit == "step"]
    assert trained == [("unlearn", step) for step in range(3, STEPS + 1)]  # from its checkpoint
    assert_same_training(one_process, out)


def test_a_hung_rank_ends_the_job_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopped (alive but silent) rank: rank 0 gives up after the collective timeout."""
    monkeypatch.setenv(dp.TIMEOUT_ENV, "4")
    sent: list[float] = []
    hooks = RunHooks(on_progress=_kill_rank_during("unlearn", 2, 0.0, signal.SIGSTOP, sent))
    with pytest.raises(RankFailed, match="within 4 s"):
        run_job(small_spec(2), tmp_path / "hung", hooks)
    assert 4 <= time.monotonic() - sent[0] < 20
    assert not _ranks_of_this_process()


class _Rank:
    def __init__(self, rank: int, world: int, monkeypatch: pytest.MonkeyPatch) -> None:
        group = dp.Group(rank, world, store=None, alive=lambda: None)
        monkeypatch.setattr(dp, "_GROUP", group)


@pytest.mark.parametrize(("batch_size", "grad_accum"), [(4, 1), (2, 3), (3, 2), (4, 4)])
def test_the_ranks_share_out_every_row_of_a_step_once(
    monkeypatch: pytest.MonkeyPatch, batch_size: int, grad_accum: int
) -> None:
    """Stream positions (which fix the rows, rows.py) of step 5: the ranks' shares are disjoint,
    equal in size, and together exactly the step's positions on one process."""
    train = TrainConfig(steps=10, batch_size=batch_size, grad_accum=grad_accum)
    one = dp.share_of(train, 5)
    whole = {m * one.batch_size + i for m in one.micros for i in range(one.batch_size)}
    shares = []
    for rank in range(2):
        _Rank(rank, 2, monkeypatch)
        share = dp.share_of(train, 5)
        shares.append([m * share.batch_size + i for m in share.micros for i in range(share.batch_size)])
        assert share.accum * share.batch_size == batch_size * grad_accum  # the backward scale
    assert len(shares[0]) == len(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(whole)


def test_a_batch_that_two_ranks_cannot_share_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"model.devices 2 must divide unlearn.train.batch_size \(3\)"):
        small_spec(2, batch_size=3)
    assert dp.split_error(TrainConfig(steps=1, batch_size=3, grad_accum=2), 2) is None
    # a spec built in code skips the validator: the launcher refuses it before starting a rank
    spec = small_spec(1, batch_size=3)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"devices": 2})})
    with pytest.raises(SpecError, match="must divide train.batch_size"):
        run_job(spec, tmp_path / "odd")
    assert not _ranks_of_this_process()


def test_lethe_unlearn_devices_sets_model_devices_and_is_validated(tmp_path: Path, capsys) -> None:
    from lethe.cli.main import main
    from lethe.core.spec.job import dump_spec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(small_spec(1, batch_size=3)))
    assert main(["unlearn", str(spec_file), "--out", str(tmp_path / "run"), "--devices", "2"]) == 1
    assert "model.devices 2 must divide unlearn.train.batch_size (3)" in capsys.readouterr().err


def test_checkpoint_selection_runs_on_rank_0_and_every_rank_ends_with_its_choice(tmp_path: Path) -> None:
    """Rank 0 alone evaluates during unlearning and loads the chosen step's weights; the adapter
    and the choice equal one process's (the other ranks take rank 0's weights)."""
    # the highest forget NLL within +10 % normal perplexity: step 4 here, not the last step (5)
    select = {"select": {"every": 2, "probe_examples": 2}, "criterion": {"objective": "forget_nll"}}
    runs = {}
    for devices in (1, 2):
        spec = parse_spec({**small_spec(devices).model_dump(by_alias=True), **select})
        run_job(spec, tmp_path / str(devices))
        runs[devices] = json.loads((tmp_path / str(devices) / "metrics.json").read_text())["selection"]
    assert runs[2]["chosen_step"] == runs[1]["chosen_step"] == 4
    assert [e["step"] for e in runs[2]["evaluations"]] == [e["step"] for e in runs[1]["evaluations"]]
    assert_same_training(tmp_path / "1", tmp_path / "2")


@pytest.mark.parametrize("stop", ["cancel", "pause"])
def test_rank_0s_cancel_or_pause_stops_every_rank_cleanly(tmp_path: Path, stop: str) -> None:
    """The caller's hooks reach rank 0 only; its decision ends the other ranks too (exit code 0),
    and the job ends with Cancelled or Paused, not RankFailed."""
    seen: list[Progress] = []

    def asked() -> bool:  # after unlearning step 2
        return any(p.stage == "unlearn" and p.step == 2 for p in seen)

    hooks = RunHooks(on_progress=seen.append, checkpoint_every=10)
    hooks.should_cancel, hooks.should_pause = (asked, None) if stop == "cancel" else (None, asked)
    with pytest.raises(Cancelled if stop == "cancel" else Paused):
        run_job(small_spec(2), tmp_path / stop, hooks)
    assert not _ranks_of_this_process() and dp.current() is None
    assert "rank 0 stopped the job" in (tmp_path / stop / "rank-1.log").read_text()
    if stop == "pause":  # the checkpoint after step 2, from which the job resumes
        assert (tmp_path / stop / "checkpoints" / "unlearn" / "step-0000002").is_dir()


def test_a_rank_that_fails_to_start_ends_the_job_at_once_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 does not wait out the timeout for a rank that died starting, and says why it died."""
    broken = tmp_path / "broken"
    broken.mkdir()  # a sitecustomize that only the processes started from here read
    site = "import os\nprint('broken on purpose', flush=True)\nos._exit(3)\n"
    (broken / "sitecustomize.py").write_text(site)
    monkeypatch.setenv("PYTHONPATH", f"{broken}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    began = time.monotonic()
    with pytest.raises(RankFailed, match=r"ended \(exit code 3; see rank-1.log\): broken on purpose"):
        run_job(small_spec(2), tmp_path / "run")
    assert time.monotonic() - began < 15  # the timeout is 300 s
