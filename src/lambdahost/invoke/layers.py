"""One /opt per combination of layers: later layers win, as Lambda stacks them.

The merged tree is built once from hard links (no copying) and cached by the layers' digests."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def merged_opt(cache_root: Path, layer_dirs: tuple[Path, ...]) -> Path | None:
    if not layer_dirs:
        return None
    if len(layer_dirs) == 1:
        return layer_dirs[0]
    key = hashlib.sha256("\n".join(d.name for d in layer_dirs).encode()).hexdigest()
    target = cache_root / key
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
    try:
        os.chmod(staging, 0o755)
        for layer in layer_dirs:
            _overlay(layer, staging)
        os.rename(staging, target)
    except FileExistsError:
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise RuntimeError(f"could not merge layers: {exc}") from exc
    return target


def _overlay(source: Path, target: Path) -> None:
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        base = target / rel
        for name in dirs:
            path = base / name
            src = Path(root) / name
            if src.is_symlink():
                _replace(path)
                os.symlink(os.readlink(src), path)
            elif not path.is_dir() or path.is_symlink():
                _replace(path)
                path.mkdir(mode=0o755)
        for name in files:
            src = Path(root) / name
            path = base / name
            _replace(path)
            if src.is_symlink():
                os.symlink(os.readlink(src), path)
            else:
                os.link(src, path)


def _replace(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
