"""Content-addressed storage for code and layer archives, named by SHA-256 (hex)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class BlobStore:
    """`put` is durable before it returns; blobs are immutable; unpacked trees sit beside them.

    Everything here is private to the server (0700 directories, 0600 blobs), except the
    unpacked trees and the merged layers (`opt/`, see invoke/layers.py): sandboxes read them
    through bind mounts as unprivileged uids, so a tree keeps its 0755/0644 modes inside the
    0700 `unpacked/` or `opt/`, which nobody else can traverse."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("", "sha256", "unpacked", "tmp", "opt"):  # opt: merged layers' cache
            _private_dir(root / name)
        self._tighten_blobs()
        self._remove_leftovers()

    def _tighten_blobs(self) -> None:
        """Blobs an older version wrote with the umask's modes (0755 dirs, 0644 files)."""
        for shard in (self.root / "sha256").iterdir():
            if shard.is_dir() and not shard.is_symlink():
                _tighten(shard, PRIVATE_DIR)
                for blob in shard.iterdir():
                    _tighten(blob, PRIVATE_FILE)

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
        _private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")  # 0600
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


def _private_dir(path: Path) -> None:
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)


def _tighten(path: Path, mode: int) -> None:
    """Give `path` exactly `mode` if it is a real file or directory (never through a link)."""
    current = path.lstat().st_mode
    if not stat.S_ISLNK(current) and stat.S_IMODE(current) != mode:
        os.chmod(path, mode)
