"""Packing a run folder's files as artifacts: a reproducible, safe adapter archive and hashes.

The archive holds only regular files and folders of the PEFT folder (no links, no devices),
under one top folder `adapter/`, with fixed owners, modes and times, so the same adapter always
gives the same bytes and the same SHA-256.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from lethe.service.infra.object_store import CHUNK

ADAPTER_ARCHIVE = "adapter.tar.gz"
# run-folder file -> content type; each becomes an artifact of the same name when present
RUN_FILES = {
    "metrics.json": "application/json",
    "train_log.jsonl": "application/x-ndjson",
    "run.log": "text/plain; charset=utf-8",
    "spec.yaml": "application/yaml",
    "env.json": "application/json",
    "model.json": "application/json",
    "report.html": "text/html; charset=utf-8",
}
LOG_FILES = ("run.log", "train_log.jsonl", "spec.yaml")  # kept for failed and cancelled runs too


@dataclass(frozen=True)
class PackedFile:
    name: str
    path: Path
    size: int
    sha256: str
    content_type: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _tarinfo(path: Path, arcname: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = path.stat().st_size, 0o644
    return info


def build_adapter_archive(adapter_dir: Path, dest: Path) -> None:
    """Write `adapter_dir` as a deterministic tar.gz at `dest` (temporary file, then rename)."""
    tmp = dest.with_name(dest.name + ".part")
    entries = sorted(adapter_dir.rglob("*"))
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(_tarinfo(adapter_dir, "adapter"))
            for path in entries:
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    continue  # never follow links or pack special files out of the run folder
                arcname = "adapter/" + path.relative_to(adapter_dir).as_posix()
                if path.is_dir():
                    tar.addfile(_tarinfo(path, arcname))
                else:
                    with open(path, "rb") as f:
                        tar.addfile(_tarinfo(path, arcname), f)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def pack(path: Path, name: str, content_type: str) -> PackedFile:
    return PackedFile(name, path, path.stat().st_size, file_sha256(path), content_type)


def collect(run_dir: Path, *, succeeded: bool) -> list[PackedFile]:
    """The artifacts of a run folder: everything for a success, the logs otherwise."""
    packed = []
    if succeeded and (run_dir / "adapter").is_dir():
        archive = run_dir.parent / ADAPTER_ARCHIVE
        build_adapter_archive(run_dir / "adapter", archive)
        packed.append(pack(archive, ADAPTER_ARCHIVE, "application/gzip"))
    for name, content_type in RUN_FILES.items():
        path = run_dir / name
        if (succeeded or name in LOG_FILES) and path.is_file() and not path.is_symlink():
            packed.append(pack(path, name, content_type))
    return packed


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract an archive with the `data` filter (no absolute paths, links out, or devices)."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest, filter="data")
