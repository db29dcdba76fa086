"""Content-addressed artifact store over fsspec: one class for local folders, memory://, s3://, …

The policy lives here once, above every backend: the key is the sha256 of the bytes (identical content
is stored once), writes are atomic (a crashed writer never leaves a half-written artifact under its
final key), and every read is verified against the digest. A plain local folder is read and written
with the standard library: importing fsspec costs ~0.1 s (it scans installed packages), which a
model server's cold start should not pay for the embedded default.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from mloop.errors import (
    ArtifactCorruptedError,
    ArtifactNotFoundError,
    ConfigurationError,
    StoreUnavailableError,
)

__all__ = ["VERIFY_CONTENT_MAX_BYTES", "FsspecArtifactStore", "digest_bytes"]

# The cache re-hashes outputs up to this size before re-linking them; larger ones are checked by size
# and verified when read (every get() checks the digest).
VERIFY_CONTENT_MAX_BYTES = 64 * 1024 * 1024


def digest_bytes(data: bytes) -> str:
    """The content address of ``data``."""
    return hashlib.sha256(data).hexdigest()


class FsspecArtifactStore:
    """Artifacts under ``url`` laid out as ``<root>/<d[:2]>/<d[2:]>``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._fs: Any = None
        if "://" not in url or url.startswith("file://"):
            self._local, root = True, os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
        else:
            import fsspec

            try:
                self._fs, root = fsspec.core.url_to_fs(url)
            except (ImportError, ValueError) as exc:
                raise ConfigurationError(f"artifact URL {url!r}: {exc}", field="artifact_url") from exc
            self._local = False
        self._root = root.rstrip("/")
        if self._local:
            try:
                Path(self._root).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(f"artifact store {url}: {exc.strerror}") from exc

    def _path(self, digest: str) -> str:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ArtifactNotFoundError(f"{digest!r} is not an artifact digest", field="digest")
        return f"{self._root}/{digest[:2]}/{digest[2:]}"

    def uri(self, digest: str) -> str:
        path = self._path(digest)
        return path if self._local else self._fs.unstrip_protocol(path)

    def put(self, data: bytes) -> tuple[str, str]:
        """Store ``data`` once under its digest; return ``(digest, uri)``.

        Self-healing: when the digest is already stored, the stored bytes are checked (size, then
        content) and a missing, truncated or corrupted file is rewritten atomically. Reading back costs
        about what writing does, and ``put`` already holds the bytes in memory, so this is always done.
        """
        digest = digest_bytes(data)
        path = self._path(digest)
        if self._stored_matches(path, digest, len(data), full=True):
            return digest, self.uri(digest)
        if self._local:
            _atomic_local_write(path, data)
        else:
            # Object stores make a single PUT visible all at once; nothing partial can be read.
            self._fs.pipe_file(path, data)
        return digest, self.uri(digest)

    def get(self, digest: str) -> bytes:
        """The bytes stored under ``digest``; raises if they are gone or do not match it."""
        path = self._path(digest)
        try:
            if self._local:
                with open(path, "rb") as fh:
                    data: bytes = fh.read()
            else:
                data = self._fs.cat_file(path)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"artifact {digest[:12]}… is recorded but its bytes are missing from {self.url}",
                field="digest",
            ) from exc
        except (IsADirectoryError, NotADirectoryError) as exc:  # replaced by a folder, or under a file
            raise ArtifactCorruptedError(
                f"artifact {digest[:12]}… is corrupted: {self.uri(digest)} is not a file", field="digest"
            ) from exc
        except PermissionError as exc:
            raise ArtifactNotFoundError(
                f"artifact {digest[:12]}… cannot be read: permission denied on {self.uri(digest)}",
                field="digest",
            ) from exc
        actual = digest_bytes(data)
        if actual != digest:
            raise ArtifactCorruptedError(
                f"artifact {digest[:12]}… is corrupted: stored bytes hash to {actual[:12]}…, "
                f"expected {digest[:12]}… ({self.uri(digest)})",
                field="digest",
            )
        return data

    def exists(self, digest: str) -> bool:
        return self._exists(self._path(digest))

    def verify(self, digest: str, size: int) -> bool:
        """Whether ``digest`` is stored intact: the size always (one stat), the content too when the
        artifact is at most ``VERIFY_CONTENT_MAX_BYTES`` (sha256 runs at ~1 GB/s, so ≤ ~60 ms).

        Larger artifacts are judged by size here and verified lazily: every :meth:`get` checks the
        digest, so a same-size corruption of a huge artifact is caught when it is read, and a
        ``--no-cache`` run then repairs it through :meth:`put`.
        """
        return self._stored_matches(self._path(digest), digest, size, full=size <= VERIFY_CONTENT_MAX_BYTES)

    def _stored_matches(self, path: str, digest: str, size: int, *, full: bool) -> bool:
        try:
            stored = os.path.getsize(path) if self._local else int(self._fs.size(path))
        except (FileNotFoundError, OSError):
            return False
        if stored != size:
            return False
        if not full:
            return True
        try:
            if self._local:
                h = hashlib.sha256()
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                return h.hexdigest() == digest
            return digest_bytes(self._fs.cat_file(path)) == digest
        except (FileNotFoundError, OSError):
            return False

    def _exists(self, path: str) -> bool:
        return os.path.exists(path) if self._local else bool(self._fs.exists(path))


def _atomic_local_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    except FileNotFoundError:  # the first artifact of its two-character folder
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
