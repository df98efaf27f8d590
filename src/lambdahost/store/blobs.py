"""Content-addressed storage for code and layer archives, named by SHA-256 (hex)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


class BlobStore:
    """`put` is durable before it returns; blobs are immutable; unpacked trees sit beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "unpacked").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Half-written blobs and half-unpacked trees of a killed process are never valid."""
        for path in (self.root / "tmp").iterdir():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
        for path in (self.root / "unpacked").glob(".*.unpacking-*"):
            shutil.rmtree(path, ignore_errors=True)

    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store `data` under its SHA-256 (hex); pass `digest` when the caller has it already."""
        digest = digest or hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def unpacked_dir(self, digest: str) -> Path:
        """Where the archive's unpacked tree lives (may not exist yet)."""
        return self.root / "unpacked" / digest

    def scratch_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
        shutil.rmtree(self.unpacked_dir(digest), ignore_errors=True)
