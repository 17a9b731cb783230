"""Object storage for datasets and artifacts: a local folder (default) or S3 (MinIO works).

Keys are relative slash-separated names (`datasets/<sha256>`, `jobs/<id>/adapter.tar.gz`) checked
by `check_key`, so no key can leave the storage root. Writes are whole or absent: the local
backend writes a temporary file and renames it; S3 makes an object visible only once complete.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lethe.service.infra.settings import Settings

CHUNK = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*(/[A-Za-z0-9][A-Za-z0-9._=-]*)*$")


class StorageError(RuntimeError):
    """The storage backend failed or is unreachable (the API answers 503)."""


class Storage(Protocol):
    def put_file(self, key: str, path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def open(self, key: str) -> BinaryIO: ...
    def get_file(self, key: str, dest: Path) -> None: ...
    def size(self, key: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def check(self) -> None: ...


def check_key(key: str) -> str:
    if len(key) > 300 or not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def iter_chunks(stream: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """Read a stream to its end in chunks and close it (for streamed responses)."""
    try:
        while block := stream.read(chunk):
            yield block
    finally:
        stream.close()


class LocalStorage:
    """Objects as files under `root`; a temporary file + rename makes each write atomic."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _atomic_write(self, key: str, write: Any) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._atomic_write(key, lambda out: shutil.copyfileobj(src, out, CHUNK))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda out: out.write(data))

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"object {key} is missing from storage") from None

    def get_file(self, key: str, dest: Path) -> None:
        _copy_to(self.open(key), dest)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
                pass
        except OSError as err:
            raise StorageError(f"storage folder {self.root} is not writable: {err}") from None


def _copy_to(stream: BinaryIO, dest: Path) -> None:
    """Copy a stream to `dest` through a temporary file, so `dest` is whole or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with stream, open(tmp, "wb") as out:
            shutil.copyfileobj(stream, out, CHUNK)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the settings' endpoint; credentials from the standard AWS variables."""
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region, config=config
    )


class S3Storage:
    """Objects in one bucket (under an optional prefix), through boto3."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.prefix}{key}") from None
            raise StorageError(f"S3 {action} of {key} failed: {code or err}") from None
        except BotoCoreError as err:
            raise StorageError(f"S3 {action} of {key} failed: {err}") from None

    def put_file(self, key: str, path: Path) -> None:
        # upload_file uses multipart for big files; the object appears only when complete.
        self._call(
            "upload", key, lambda **kw: self.client.upload_file(str(path), kw["Bucket"], self._key(key))
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put", key, self.client.put_object, Key=self._key(key), Body=data)

    def open(self, key: str) -> BinaryIO:
        try:
            return self._call("get", key, self.client.get_object, Key=self._key(key))["Body"]
        except FileNotFoundError:
            raise StorageError(f"object {key} is missing from storage") from None

    def get_file(self, key: str, dest: Path) -> None:
        _copy_to(self.open(key), dest)

    def size(self, key: str) -> int:
        return int(self._call("head", key, self.client.head_object, Key=self._key(key))["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Key=self._key(key))
            return True
        except FileNotFoundError:
            return False

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Key=self._key(key))

    def check(self) -> None:
        try:
            self._call("head", "(bucket)", self.client.head_bucket)
        except FileNotFoundError:
            raise StorageError(f"bucket {self.bucket} does not exist") from None


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        if not settings.s3_bucket:
            raise ValueError("LETHE_STORAGE=s3 needs LETHE_S3_BUCKET")
        return S3Storage(s3_client(settings), settings.s3_bucket, settings.s3_prefix)
    return LocalStorage(settings.storage_root)
