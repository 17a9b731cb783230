"""Checkpoints in object storage (service/jobs/resume_store.py): a job stopped on one worker resumes
on another that shares no folder with it, from the newest complete snapshot, to the same weights;
older snapshots are pruned; a torn, orphaned or hostile snapshot is never restored."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest
import torch
from toy_data import FMT, FORGET, NORMAL

from lethe.core.methods import YaoStage, terms_for
from lethe.core.models.loading import load_model
from lethe.core.models.lora import attach_lora
from lethe.core.models.reference import Reference
from lethe.core.spec.fields import LoraSpec, ModelSpec
from lethe.core.training.engine import Cancelled, RunHooks, Stage, StageData, run_stage
from lethe.service.infra.object_store import LocalStorage, S3Storage, Storage
from lethe.service.jobs import resume_store
from lethe.service.jobs.resume_store import POINTER, ResumeStore, SnapshotError, prefix

pytest_plugins = ["service_fixtures"]
JOB = uuid.UUID("00000000-0000-0000-0000-0000000000ab")


class LeaseLost(Exception):
    pass


def method(steps: int = 6) -> YaoStage:
    ref = {"source": "unused.jsonl"}
    train = {"lr": 5e-3, "steps": steps, "batch_size": 2, "checkpoint_every": 2}
    return YaoStage(forget=ref, normal=ref, train=train)


def fresh_model() -> tuple[torch.nn.Module, object]:
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    return attach_lora(model, LoraSpec(rank=4, alpha=8)), tok


def stage(run_dir: Path, steps: int = 6) -> Stage:
    m = method(steps)
    data = StageData(forget=FORGET, normal=NORMAL)
    return Stage(
        "unlearn",
        terms_for(m),
        data,
        m.train,
        FMT,
        seed=3,
        checkpoint_dir=run_dir / "checkpoints" / "unlearn",
        log_path=run_dir / "train_log.jsonl",
    )


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def objects(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def interrupted_run(storage: Storage, run_dir: Path, stop_after: int) -> None:
    """Worker A: trains with snapshots after each checkpoint and is stopped after `stop_after` steps."""
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text("datasets: /worker-a/work/datasets\n")
    (run_dir / "eval_before.json").write_text("{}")
    store = ResumeStore(storage, JOB, 1, run_dir)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > stop_after

    model, tok = fresh_model()
    hooks = RunHooks(should_cancel=stop, on_checkpoint=store.save)
    with pytest.raises(Cancelled):
        run_stage(model, tok, stage(run_dir), hooks, Reference(model))


def test_another_worker_resumes_from_storage_to_the_same_weights(tmp_path: Path) -> None:
    model, tok = fresh_model()
    (tmp_path / "reference").mkdir()
    run_stage(model, tok, stage(tmp_path / "reference"), reference=Reference(model))
    uninterrupted = trainable(model)

    storage = LocalStorage(tmp_path / "storage")
    interrupted_run(storage, tmp_path / "a" / "run", stop_after=5)  # checkpoints at 2 and 4
    # pruned: only the newest snapshot and its pointer are left
    assert objects(tmp_path / "storage") == [f"{prefix(JOB)}/0000002-a1.tar", f"{prefix(JOB)}/{POINTER}"]

    run_b = tmp_path / "b" / "run"  # worker B: another folder, nothing of the job in it
    store = ResumeStore(storage, JOB, 2, run_b)
    restored = store.restore()
    assert restored is not None and restored.stages["unlearn"]["step"] == 4
    assert sorted(p.name for p in (run_b / "checkpoints" / "unlearn").iterdir()) == ["step-0000004"]
    assert (run_b / "eval_before.json").read_text() == "{}"  # finished parts come along
    assert not (run_b / "spec.yaml").exists()  # names worker A's folders: B writes its own
    model, tok = fresh_model()
    result = run_stage(model, tok, stage(run_b), RunHooks(on_checkpoint=store.save), Reference(model))
    assert [row["step"] for row in result.log] == [1, 2, 3, 4, 5, 6]
    rows = [json.loads(line)["step"] for line in (run_b / "train_log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4, 5, 6]  # worker A's log came along, cut back to step 4
    for name, value in trainable(model).items():
        torch.testing.assert_close(value, uninterrupted[name], rtol=0, atol=1e-7)
    # B numbered on from A's pointer (its one more: the stage's final checkpoint) and pruned A's
    assert objects(tmp_path / "storage") == [f"{prefix(JOB)}/0000003-a2.tar", f"{prefix(JOB)}/{POINTER}"]


def fake_run(run_dir: Path, step: int, complete: bool = False, name: str = "") -> Path:
    """A run folder whose `unlearn` stage has a checkpoint at `step` (meta only: enough to pack)."""
    folder = run_dir / "checkpoints" / "unlearn" / (name or f"step-{step:07d}")
    folder.mkdir(parents=True)
    meta = {"step": step, "complete": complete, "reason": "", "log": [], "extra": {}}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "state.pt").write_bytes(b"weights of step %d" % step)
    return folder


def test_old_checkpoints_and_half_written_files_stay_out_of_a_snapshot(tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    fake_run(run, 2)
    newest = fake_run(run, 4)
    (run / "checkpoints" / "unlearn" / "step-0000006.partial").mkdir()  # killed while writing
    (run / "checkpoints" / "unlearn" / "step-0000006.partial" / "state.pt").write_bytes(b"torn")
    (run / "checkpoints" / "unlearn" / "best-step-0000002.pt").write_bytes(b"selection snapshot")
    (run / "metrics.json.tmp").write_text("{")
    storage = LocalStorage(tmp_path / "storage")
    ResumeStore(storage, JOB, 1, run).save(newest)
    run_b = tmp_path / "b" / "run"
    assert ResumeStore(storage, JOB, 2, run_b).restore() is not None
    assert objects(run_b) == [
        "checkpoints/unlearn/best-step-0000002.pt",
        "checkpoints/unlearn/step-0000004/meta.json",
        "checkpoints/unlearn/step-0000004/state.pt",
    ]


def test_a_local_folder_as_far_as_the_snapshot_is_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    storage = LocalStorage(tmp_path / "storage")
    ResumeStore(storage, JOB, 1, run).save(fake_run(run, 4))
    fake_run(run, 6)  # this worker got further than its last upload (storage was down)
    assert ResumeStore(storage, JOB, 2, run).restore() is None
    assert (run / "checkpoints" / "unlearn" / "step-0000006").is_dir()
    behind = tmp_path / "behind"
    fake_run(behind, 2)  # a worker that ran an earlier attempt: behind the snapshot
    assert ResumeStore(storage, JOB, 2, behind).restore() is not None
    assert sorted(p.name for p in (behind / "checkpoints" / "unlearn").iterdir()) == ["step-0000004"]


def test_a_torn_or_orphaned_snapshot_is_never_restored(tmp_path: Path) -> None:
    run, root = tmp_path / "a", tmp_path / "storage"
    storage = LocalStorage(root)
    store = ResumeStore(storage, JOB, 1, run)
    store.save(fake_run(run, 2))
    # killed between the upload of the next snapshot and the pointer's move: an orphan
    storage.put_bytes(f"{prefix(JOB)}/0000002-a1.tar", b"not even a tar")
    fresh = tmp_path / "b"
    snap = ResumeStore(storage, JOB, 2, fresh).restore()
    assert snap is not None and snap.stages["unlearn"]["step"] == 2  # the pointer's, not the orphan
    assert not (root / prefix(JOB) / "0000002-a1.tar").exists()  # the next attempt deleted it
    # the object the pointer names is torn (a backend without atomic writes, bit rot): refused
    path = root / prefix(JOB) / "0000001-a1.tar"
    path.write_bytes(path.read_bytes()[:-700])
    torn = tmp_path / "c"
    assert ResumeStore(storage, JOB, 3, torn).restore() is None
    assert not torn.exists()  # nothing half-restored: the run starts from what the folder holds


def hostile(storage: Storage, member: tarfile.TarInfo, data: bytes = b"") -> None:
    """A snapshot holding `member`, with a pointer whose digest matches it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    key = f"{prefix(JOB)}/0000001-a1.tar"
    storage.put_bytes(key, buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    stages = {"unlearn": {"step": 2, "complete": False}}
    pointer = {"key": key, "seq": 1, "attempt": 1, "sha256": sha, "size": len(buffer.getvalue())}
    storage.put_bytes(f"{prefix(JOB)}/{POINTER}", json.dumps({**pointer, "stages": stages}).encode())


@pytest.mark.parametrize("name", ["../escaped", "/tmp/escaped", "checkpoints/../../escaped"])
def test_members_outside_the_run_folder_are_refused(tmp_path: Path, name: str) -> None:
    storage = LocalStorage(tmp_path / "storage")
    member = tarfile.TarInfo(name)
    member.size = 4
    hostile(storage, member, b"evil")
    with pytest.raises(SnapshotError):
        resume_store.check_member(member)
    run = tmp_path / "w" / "run"
    assert ResumeStore(storage, JOB, 2, run).restore() is None
    assert not (tmp_path / "w" / "escaped").exists() and not run.exists()


def test_links_are_refused(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    link = tarfile.TarInfo("checkpoints/unlearn/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hostile(storage, link)
    run = tmp_path / "w" / "run"
    assert ResumeStore(storage, JOB, 2, run).restore() is None
    assert not run.exists()


def test_a_worker_that_lost_the_job_uploads_nothing(tmp_path: Path) -> None:
    run, root = tmp_path / "run", tmp_path / "storage"
    storage = LocalStorage(root)
    store = ResumeStore(storage, JOB, 1, run)
    store.save(fake_run(run, 2))
    before = objects(root)

    def lost() -> None:
        raise LeaseLost("another worker took the job")

    store.fence = lost
    with pytest.raises(LeaseLost):  # not swallowed like a storage failure: the run must stop
        store.save(fake_run(run, 4))
    assert objects(root) == before


def test_ending_the_job_deletes_its_snapshots(tmp_path: Path) -> None:
    run, root = tmp_path / "run", tmp_path / "storage"
    storage = LocalStorage(root)
    store = ResumeStore(storage, JOB, 1, run)
    store.save(fake_run(run, 2))
    store.save(fake_run(run, 4))
    assert len(objects(root)) == 2
    resume_store.discard(storage, JOB)
    assert objects(root) == []


def test_snapshots_round_trip_through_s3(tmp_path: Path) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lethe")
        storage = S3Storage(client, "lethe", "pre/")
        run = tmp_path / "a"
        store = ResumeStore(storage, JOB, 1, run)
        store.save(fake_run(run, 2))
        store.save(fake_run(run, 4))
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="lethe")["Contents"])
        assert keys == [f"pre/{prefix(JOB)}/0000002-a1.tar", f"pre/{prefix(JOB)}/{POINTER}"]
        other = tmp_path / "b"
        assert ResumeStore(storage, JOB, 2, other).restore() is not None
        assert (other / "checkpoints" / "unlearn" / "step-0000004" / "state.pt").read_bytes() == (
            b"weights of step 4"
        )
        resume_store.discard(storage, JOB)
        assert client.list_objects_v2(Bucket="lethe").get("KeyCount") == 0


def test_the_heartbeat_check_deletes_the_snapshots_of_the_jobs_it_ends(
    queued_runtime, tmp_path: Path
) -> None:  # noqa: ANN001
    from test_service_reliability import age, new_job

    from lethe.service.jobs import records
    from lethe.service.jobs.claim import Claim, claim_job
    from lethe.service.jobs.reconcile import check_heartbeats

    rt, _ = queued_runtime
    ended, requeued = new_job(rt, "ended"), new_job(rt, "requeued")
    for job in (ended, requeued):
        claim = claim_job(rt, job.id)
        assert isinstance(claim, Claim)
        ResumeStore(rt.storage, job.id, claim.attempt, tmp_path / job.name).save(
            fake_run(tmp_path / job.name, 2)
        )
        age(rt, job.id)  # its worker vanished
    records.cancel_job(rt, ended.id, tenant="default")
    assert check_heartbeats(rt) == {ended.id: "cancelled", requeued.id: "queued"}
    assert resume_store.read_pointer(rt.storage, ended.id) is None
    assert not rt.storage.exists(resume_store.snapshot_key(ended.id, 1, 1))
    kept = resume_store.read_pointer(rt.storage, requeued.id)  # its next attempt resumes from it
    assert kept is not None and rt.storage.exists(kept.key)
