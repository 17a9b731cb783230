"""One contract for both storage backends: local folder and S3 (moto's server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import free_port

from lethe.service.infra.object_store import (
    LocalStorage,
    S3Storage,
    StorageError,
    check_key,
    make_storage,
    s3_client,
)
from lethe.service.infra.settings import Settings

pytest_plugins = ["service_fixtures"]  # s3_endpoint (moto on loopback), aws_env


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path: Path, aws_env: None):  # noqa: ANN001
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    settings = Settings(
        data_dir=tmp_path, storage="s3", s3_endpoint_url=endpoint, s3_bucket="lethe-test", s3_prefix="p/"
    )
    s3_client(settings).create_bucket(Bucket="lethe-test")
    return make_storage(settings)


def test_put_read_size_delete(storage, tmp_path: Path) -> None:  # noqa: ANN001
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    storage.put_file("datasets/abc", src)
    storage.put_bytes("jobs/1/metrics.json", b"{}")
    assert storage.exists("datasets/abc") and storage.size("datasets/abc") == 3_000_000
    with storage.open("jobs/1/metrics.json") as f:
        assert f.read() == b"{}"
    storage.get_file("datasets/abc", tmp_path / "out" / "copy.bin")
    assert (tmp_path / "out" / "copy.bin").read_bytes() == src.read_bytes()
    storage.delete("datasets/abc")
    assert not storage.exists("datasets/abc")
    with pytest.raises(StorageError, match="missing"):
        storage.open("datasets/abc")
    storage.check()


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/../b", "", "a/.hidden", "a b"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_local_write_is_atomic(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)

    class Exploding:
        def read(self, n: int) -> bytes:
            raise OSError("disk gone")

    with pytest.raises(OSError):
        store._atomic_write("datasets/x", lambda out: out.write(Exploding().read(1)))
    assert not store.exists("datasets/x")
    assert list((tmp_path / "datasets").iterdir()) == []  # no temporary file left behind


def test_unreachable_s3_fails_the_check(tmp_path: Path, aws_env: None) -> None:
    settings = Settings(
        data_dir=tmp_path, storage="s3", s3_bucket="b", s3_endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    store = make_storage(settings)
    assert isinstance(store, S3Storage)
    with pytest.raises(StorageError):
        store.check()


def test_missing_bucket_fails_the_check(s3_endpoint: str, tmp_path: Path, aws_env: None) -> None:
    store = make_storage(
        Settings(data_dir=tmp_path, storage="s3", s3_bucket="nope", s3_endpoint_url=s3_endpoint)
    )
    with pytest.raises(StorageError, match="nope"):
        store.check()
