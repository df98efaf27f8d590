"""Function code: zip archives stored by content (SHA-256) and unpacked once.

The unpacked tree is what environments mount as /var/task; the zip itself stays in the blob
store, so a lost tree can be unpacked again (see `prepare`)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lambdahost.control.lambda_ import rules
from lambdahost.control.lambda_.archive import ArchiveError, unpack_zip
from lambdahost.control.lambda_.values import ResolvedLayer
from lambdahost.errors import InvalidParameterValue
from lambdahost.store.blobs import BlobStore

# Checks layer version ARNs: [(arn, sha256 hex, zipped size, unzipped size)].
LayerResolver = Callable[[list[str]], list[ResolvedLayer]]
# Two uploads of one zip unpack it once, also in two accounts (their blob store is shared).
_UNPACK_LOCK = threading.Lock()


class CodeStore:
    def __init__(self, blobs: BlobStore, layers: LayerResolver) -> None:
        self.blobs = blobs
        self.layers = layers
        self._unpack_lock = _UNPACK_LOCK

    def store(self, code: dict[str, Any]) -> tuple[str, int]:
        """Validate, unpack and durably store a zip. Returns (sha256 hex, size)."""
        if code.get("S3Bucket") or code.get("S3Key") or code.get("ImageUri"):
            raise InvalidParameterValue(
                "lambdahost accepts function code as ZipFile only; S3 and image code locations "
                "are not supported."
            )
        data = code.get("ZipFile")
        if not data:
            raise InvalidParameterValue("Please provide a source for function code: ZipFile.")
        rules.check_zip_size(len(data))
        digest = hashlib.sha256(data).hexdigest()
        self._unpack(data, digest)
        self.blobs.put(data, digest)
        return digest, len(data)

    def directory(self, digest: str) -> Path:
        return self.blobs.unpacked_dir(digest)

    def prepare(self, digest: str) -> str | None:
        """Make sure the unpacked tree exists; returns why it cannot, or None."""
        if not self.directory(digest).is_dir():
            try:
                self._unpack(self.blobs.read(digest), digest)
            except (OSError, ArchiveError) as exc:
                return f"The function code could not be prepared: {exc}"
        return None

    def attach_layers(
        self, config: dict[str, Any], arns: list[str] | None, digest: str
    ) -> list[str]:
        """Set config["Layers"] and return the layers' digests, checking the total size."""
        if not arns:
            config.pop("Layers", None)
            return []
        resolved = self.layers(list(arns))
        total = tree_size(self.directory(digest)) + sum(r.unzipped_bytes for r in resolved)
        if total > rules.UNZIPPED_MAX:
            raise InvalidParameterValue(
                "Function code combined with layers exceeds the maximum allowed size of "
                f"{rules.UNZIPPED_MAX} bytes. The actual size is {total} bytes."
            )
        config["Layers"] = [{"Arn": r.arn, "CodeSize": r.code_size} for r in resolved]
        return [r.code_sha256 for r in resolved]

    def _unpack(self, data: bytes, digest: str) -> None:
        dest = self.directory(digest)
        with self._unpack_lock:
            if dest.is_dir():
                return
            try:
                unpack_zip(data, dest, max_unzipped_bytes=rules.UNZIPPED_MAX)
            except ArchiveError as exc:
                shutil.rmtree(dest, ignore_errors=True)
                raise InvalidParameterValue(str(exc)) from None


def tree_size(root: Path) -> int:
    """Bytes of the regular files under `root` (symlinks not followed)."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def b64(hex_digest: str) -> str:
    """CodeSha256 as the API shows it: base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()
