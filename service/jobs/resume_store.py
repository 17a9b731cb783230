"""A running job's checkpoints in object storage, so that any worker can resume it, not only one
that shares the work folder of the worker that died.

After each checkpoint the engine completes (`RunHooks.on_checkpoint`) the run folder, less older
checkpoints and half-written files, is packed into one tar object
`jobs/<id>/resume/<seq>-a<attempt>.tar`. One PUT makes it whole or absent (see object_store), and
only then does the pointer `jobs/<id>/resume/latest.json` name it, with its size and SHA-256; the
snapshot it replaced is deleted next. A snapshot is read only through the pointer and only if its
bytes match the pointer's digest, so a torn or orphaned object is never restored. Before the engine
runs on a claim, `restore` replaces the local run folder by the newest snapshot unless the local
folder has got as far (a worker of the same machine). When the job ends, `discard` deletes it all.

Every write is fenced by the claim (`Heartbeat.ensure_held`), and keys carry the attempt, so a
worker that lost the job cannot overwrite the snapshots of the attempt that took it over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lethe.service.infra.object_store import Storage, StorageError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
POINTER = "latest.json"
# written beside their final name and renamed (checkpoint.py, run folder, object_store)
HALF_WRITTEN = (".partial", ".tmp", ".part")
# not state but the worker's own: the resolved spec names the datasets in its work folder, and the
# run folder refuses a spec.yaml that differs, so each worker writes its own (`runfolder.start`)
WORKER_OWN = ("spec.yaml",)


class SnapshotError(ValueError):
    """A snapshot that must not be restored: wrong digest, or a member outside the run folder."""


@dataclass(frozen=True)
class Snapshot:
    """What the pointer says: the object, its digest, and how far each stage had trained."""

    key: str
    seq: int
    attempt: int
    sha256: str
    size: int
    stages: dict[str, dict[str, Any]]  # stage -> {"step": n, "complete": bool}
    replaces: str | None = None  # the snapshot this one replaced (deleted after the pointer moved)
    created_at: float = field(default_factory=time.time)


def prefix(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}/resume"


def snapshot_key(job_id: uuid.UUID, seq: int, attempt: int) -> str:
    return f"{prefix(job_id)}/{seq:07d}-a{attempt}.tar"


def read_pointer(storage: Storage, job_id: uuid.UUID) -> Snapshot | None:
    """The newest complete snapshot, or None (none yet, or the pointer is unreadable)."""
    key = f"{prefix(job_id)}/{POINTER}"
    try:
        if not storage.exists(key):
            return None
        with storage.open(key) as stream:
            return Snapshot(**json.loads(stream.read()))
    except (StorageError, OSError, ValueError, TypeError) as err:
        log.warning("job %s: resume pointer unreadable (%s); not resuming from storage", job_id, err)
        return None


def stage_progress(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each stage's newest complete checkpoint in `run_dir`: {"step", "complete", "name"}."""
    from lethe.core.training.checkpoint import latest_checkpoint, read_meta  # torch: workers only

    found: dict[str, dict[str, Any]] = {}
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return found
    for stage in sorted(p for p in root.iterdir() if p.is_dir()):
        latest = latest_checkpoint(stage)
        if latest is not None:
            meta = read_meta(latest)
            found[stage.name] = {"step": meta["step"], "complete": meta["complete"], "name": latest.name}
    return found


def covers(run_dir: Path, stages: dict[str, dict[str, Any]]) -> bool:
    """Whether the local run folder got at least as far as a snapshot in every stage it holds."""
    try:
        local = stage_progress(run_dir)
    except (OSError, ValueError, KeyError):  # an unreadable checkpoint: trust the snapshot
        return False
    for name, theirs in stages.items():
        ours = local.get(name)
        if ours is None or (ours["step"], ours["complete"]) < (theirs["step"], theirs["complete"]):
            return False
    return True


def _members(run_dir: Path, progress: dict[str, dict[str, Any]]) -> Iterator[Path]:
    """The files worth keeping: all but older checkpoints, half-written files and WORKER_OWN."""
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if any(part.endswith(HALF_WRITTEN) for part in rel.parts) or not path.is_file():
            continue
        if rel.as_posix() in WORKER_OWN:
            continue
        if len(rel.parts) > 3 and rel.parts[0] == CHECKPOINTS:  # checkpoints/<stage>/<ckpt>/<file>
            newest = progress.get(rel.parts[1], {}).get("name")
            if rel.parts[2] != newest:
                continue
        yield path


def pack(run_dir: Path, dest: Path) -> dict[str, dict[str, Any]]:
    """Write the run folder's resumable state to the tar `dest`; return its stages' progress."""
    progress = stage_progress(run_dir)
    with tarfile.open(dest, "w") as tar:  # uncompressed: weights and optimizer state barely shrink
        for path in _members(run_dir, progress):
            tar.add(path, arcname=path.relative_to(run_dir).as_posix(), recursive=False)
    return progress


def check_member(member: tarfile.TarInfo) -> None:
    """Only plain files and folders under the run folder: no links, devices, absolute paths, `..`."""
    parts = Path(member.name).parts
    if not (member.isfile() or member.isdir()):
        raise SnapshotError(f"snapshot member {member.name!r} is not a plain file")
    if not parts or Path(member.name).is_absolute() or ".." in parts or member.name.startswith("/"):
        raise SnapshotError(f"snapshot member {member.name!r} lies outside the run folder")


def extract(archive: Path, dest: Path) -> None:
    """Unpack a snapshot into the new folder `dest`, refusing any unsafe member first."""
    with tarfile.open(archive, "r") as tar:
        members = tar.getmembers()
        for member in members:
            check_member(member)
        dest.mkdir(parents=True)
        tar.extractall(dest, members=members, filter="data")  # checks again, as the stdlib does


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest(), path.stat().st_size


class ResumeStore:
    """One attempt's snapshots of `run_dir`; `fence` raises once the attempt lost its claim."""

    def __init__(
        self,
        storage: Storage,
        job_id: uuid.UUID,
        attempt: int,
        run_dir: Path,
        fence: Callable[[], None] | None = None,
    ) -> None:
        self.storage, self.job_id, self.attempt, self.run_dir = storage, job_id, attempt, run_dir
        self.fence = fence or (lambda: None)
        self.current: Snapshot | None = None  # the snapshot the pointer names

    def restore(self) -> Snapshot | None:
        """Before the engine runs: make the run folder the newest snapshot's, unless it has got as
        far already; return the snapshot restored, or None. A snapshot that cannot be fetched or
        does not match its digest is not used: the run resumes from what the folder holds."""
        self.current = found = read_pointer(self.storage, self.job_id)
        if found is None:
            self._drop_leftovers(0, None)
            return None
        self._drop_leftovers(found.seq, found.replaces)
        if covers(self.run_dir, found.stages):
            log.info("job %s: the local run folder is as far as snapshot %s", self.job_id, found.key)
            return None
        try:
            self._fetch(found)
        except (StorageError, OSError, SnapshotError, tarfile.TarError) as err:
            log.warning("job %s: snapshot %s not restored: %s", self.job_id, found.key, err)
            return None
        log.info("job %s: run folder restored from %s (%s)", self.job_id, found.key, found.stages)
        return found

    def _fetch(self, snap: Snapshot) -> None:
        download = self.run_dir.with_name("resume.tar")
        staging = self.run_dir.with_name(self.run_dir.name + ".restoring")
        shutil.rmtree(staging, ignore_errors=True)  # left by a worker killed while restoring
        try:
            self.storage.get_file(snap.key, download)
            if file_digest(download) != (snap.sha256, snap.size):
                raise SnapshotError(f"{snap.key} does not match its pointer's digest")
            extract(download, staging)
            self.fence()  # the run folder is this attempt's only while it holds the claim
            shutil.rmtree(self.run_dir, ignore_errors=True)
            staging.rename(self.run_dir)
        finally:
            download.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)

    def _drop_leftovers(self, seq: int, replaced: str | None) -> None:
        """Delete what a killed attempt may have left: the snapshot the pointer replaced (killed
        before pruning it) and the previous attempt's next one (killed before the pointer named
        it: its key is known, as each attempt numbers on from the pointer it found)."""
        stale = [snapshot_key(self.job_id, seq + 1, self.attempt - 1)] if self.attempt > 1 else []
        for key in [*stale, *([replaced] if replaced else [])]:
            try:
                self.fence()
                self.storage.delete(key)
            except (StorageError, OSError) as err:
                log.warning("job %s: could not delete %s: %s", self.job_id, key, err)

    def save(self, checkpoint: Path) -> None:
        """`RunHooks.on_checkpoint`: store the run folder as of `checkpoint`, then prune. A storage
        failure costs only the copy (logged): the job still resumes on this machine."""
        seq = (self.current.seq if self.current else 0) + 1
        archive = self.run_dir.with_name(f"resume-{seq}.tar")
        began = time.monotonic()
        try:
            snap = self._upload(seq, archive)
        except (StorageError, OSError, tarfile.TarError) as err:
            log.warning("job %s: checkpoint %s not copied to storage: %s", self.job_id, checkpoint, err)
            return
        finally:
            archive.unlink(missing_ok=True)
        previous, self.current = self.current, snap
        took = time.monotonic() - began
        log.info("job %s: stored %s (%d bytes, %.2f s)", self.job_id, snap.key, snap.size, took)
        if previous is not None and previous.key != snap.key:
            try:
                self.storage.delete(previous.key)
            except (StorageError, OSError) as err:  # the next attempt deletes it (`replaces`)
                log.warning("job %s: could not prune %s: %s", self.job_id, previous.key, err)

    def _upload(self, seq: int, archive: Path) -> Snapshot:
        stages = pack(self.run_dir, archive)
        sha256, size = file_digest(archive)
        key = snapshot_key(self.job_id, seq, self.attempt)
        replaces = self.current.key if self.current else None
        snap = Snapshot(key, seq, self.attempt, sha256, size, stages, replaces)
        self.fence()
        self.storage.put_file(key, archive)  # whole or absent
        self.fence()  # only a claim holder moves the pointer
        self.storage.put_bytes(f"{prefix(self.job_id)}/{POINTER}", json.dumps(asdict(snap)).encode())
        return snap


def discard(storage: Storage, job_id: uuid.UUID) -> None:
    """Delete a job's snapshots once it ended (best effort: a failure is logged). The snapshot
    before the pointer: a pointer naming nothing is read as no snapshot, and deleted next time."""
    snap = read_pointer(storage, job_id)
    keys = [snap.key, *([snap.replaces] if snap.replaces else [])] if snap else []
    try:
        for key in [*keys, f"{prefix(job_id)}/{POINTER}"]:
            storage.delete(key)
    except (StorageError, OSError) as err:
        log.warning("job %s: snapshots not deleted: %s", job_id, err)
