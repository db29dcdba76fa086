"""The artifact store contract, run against a local folder and fsspec's in-memory filesystem."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import fsspec
import pytest

from mloop.errors import ArtifactCorruptedError, ArtifactNotFoundError
from mloop.stores.artifacts import FsspecArtifactStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FsspecArtifactStore:
    if request.param == "local":
        return FsspecArtifactStore(str(tmp_path / "artifacts"))
    return FsspecArtifactStore(f"memory://mloop-{uuid.uuid4().hex}")


def _overwrite(store: FsspecArtifactStore, digest: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(store.uri(digest))
    fs.pipe_file(path, data)


def test_put_is_content_addressed_and_idempotent(store: FsspecArtifactStore) -> None:
    digest, uri = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.put(b"hello") == (digest, uri)
    assert store.get(digest) == b"hello"
    assert store.exists(digest)
    assert not store.exists(hashlib.sha256(b"other").hexdigest())


def test_missing_bytes_raise_not_found(store: FsspecArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match="missing"):
        store.get(hashlib.sha256(b"never stored").hexdigest())
    with pytest.raises(ArtifactNotFoundError, match="not an artifact digest"):
        store.get("../../etc/passwd")


def test_tampered_bytes_are_refused(store: FsspecArtifactStore) -> None:
    digest, _ = store.put(b"model weights")
    _overwrite(store, digest, b"evil weights")
    with pytest.raises(ArtifactCorruptedError, match="corrupted"):
        store.get(digest)


def test_a_folder_in_place_of_the_bytes_is_named_as_corruption(tmp_path: Path) -> None:
    # it was "unexpected IsADirectoryError … (a bug in mloop)"
    store = FsspecArtifactStore(str(tmp_path / "a"))
    digest, uri = store.put(b"model weights")
    path = Path(uri.removeprefix("file://"))
    path.unlink()
    path.mkdir()
    with pytest.raises(ArtifactCorruptedError, match="is not a file"):
        store.get(digest)


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "a"))
    for i in range(20):
        store.put(f"value {i}".encode())
    files = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(files) == 20 and not any(p.name.startswith(".tmp-") for p in files)


def test_put_of_a_stored_digest_repairs_corrupted_bytes(store: FsspecArtifactStore) -> None:
    digest, _ = store.put(b"model weights")
    _overwrite(store, digest, b"evil weights!")  # same size: only the content check can tell
    assert not store.verify(digest, len(b"model weights"))
    store.put(b"model weights")
    assert store.get(digest) == b"model weights"
    _overwrite(store, digest, b"trunc")
    store.put(b"model weights")
    assert store.verify(digest, len(b"model weights")) and store.get(digest) == b"model weights"


def test_verify_checks_size_and_content(store: FsspecArtifactStore) -> None:
    digest, _ = store.put(b"abc")
    assert store.verify(digest, 3)
    assert not store.verify(digest, 4)
    assert not store.verify(hashlib.sha256(b"never").hexdigest(), 5)
