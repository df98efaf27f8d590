"""One /opt per combination of layers: later layers win, as Lambda stacks them.

The merged tree is built once from hard links (no copying) and cached by the layers' digests.

Each layer alone is safe (the archive check keeps its links inside it), but two layers
together are not: layer 1's `a/b/p -> q/../../..` stays inside layer 1, and layer 2's
`a/b/q -> ../../x` stays inside layer 2, yet in the merged tree `p` climbs above it. So:
- The merge never follows a link on the host: every directory it writes into is opened
  component by component with O_NOFOLLOW, every file is linked or replaced with *at calls.
- Later layers win path by path, as stacked image layers do: a later layer's directory
  replaces an earlier layer's link (or file) at the same path, instead of pouring its files
  through that link into wherever it points. What the function sees is each path of the last
  layer that has it, never a file written somewhere a link happened to lead.
- Links that resolve outside the merged tree (resolved as the sandbox sees them, /opt having
  nothing above it) are dropped, with a warning: inside the sandbox they would only dangle
  or point at the sandbox's own root, but on the host they name host paths, which root-owned
  code walking the cache must never be led to.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("lambdahost.invoke")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_HOPS = 40  # the kernel's own limit on links followed in one lookup (ELOOP)
_KEY_VERSION = "2"  # merges made before links were checked are never reused


def merged_opt(cache_root: Path, layer_dirs: tuple[Path, ...]) -> Path | None:
    if not layer_dirs:
        return None
    if len(layer_dirs) == 1:
        return layer_dirs[0]  # one archive: its links were checked when it was unpacked
    names = "\n".join(d.name for d in layer_dirs)
    key = hashlib.sha256(f"{_KEY_VERSION}\n{names}".encode()).hexdigest()
    target = cache_root / key
    if target.is_dir():
        return target
    cache_root.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as all of blobs/
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
    try:
        os.chmod(staging, 0o755)  # the tree's root becomes /opt: the sandbox's uid reads it
        root_fd = os.open(staging, _DIR_FLAGS)
        try:
            for layer in layer_dirs:
                _overlay(layer, root_fd)
        finally:
            os.close(root_fd)
        for link in escaping_links(staging):
            log.warning(
                "layers %s: dropped /opt/%s: the link leads outside /opt (or loops)",
                ", ".join(d.name[:12] for d in layer_dirs),
                link,
            )
            os.unlink(staging / link)
        os.rename(staging, target)
    except FileExistsError:
        shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise RuntimeError(f"could not merge layers: {exc}") from exc
    return target


def _overlay(source: Path, root_fd: int) -> None:
    """Lay `source`'s tree over the directory open at `root_fd` (see the module's rules)."""
    pending: list[tuple[str, ...]] = [()]
    while pending:
        rel = pending.pop()
        into = _open_below(root_fd, rel)
        try:
            with os.scandir(source.joinpath(*rel)) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        _ensure_dir(into, entry.name)
                        pending.append((*rel, entry.name))
                        continue
                    _remove(into, entry.name)
                    if entry.is_symlink():
                        os.symlink(os.readlink(entry.path), entry.name, dir_fd=into)
                    else:  # the layer's own unpacked file: never a link (checked above)
                        os.link(entry.path, entry.name, dst_dir_fd=into, follow_symlinks=False)
        finally:
            os.close(into)


def _open_below(root_fd: int, rel: tuple[str, ...]) -> int:
    """The directory `rel` under `root_fd`, each component opened without following links."""
    fd = os.dup(root_fd)
    for part in rel:
        try:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def _ensure_dir(dir_fd: int, name: str) -> None:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        return  # directories of several layers merge
    if mode is not None:
        _remove(dir_fd, name)  # an earlier layer's link or file: the later directory wins
    os.mkdir(name, 0o755, dir_fd=dir_fd)
    os.chmod(name, 0o755, dir_fd=dir_fd)  # mkdir's mode is umasked; `name` is our new dir


def _remove(dir_fd: int, name: str) -> None:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # the fd-based walk: it never follows a link
    else:
        os.unlink(name, dir_fd=dir_fd)


def escaping_links(root: Path) -> list[str]:
    """The links under `root` (paths relative to it) that resolve outside it."""
    found = []
    pending: list[tuple[str, ...]] = [()]
    while pending:  # no recursion: a layer's tree may be deeper than Python's stack
        rel = pending.pop()
        with os.scandir(root.joinpath(*rel)) as entries:
            for entry in entries:
                if entry.is_symlink():
                    if _escapes(root, (*rel, entry.name)):
                        found.append("/".join((*rel, entry.name)))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append((*rel, entry.name))
    return sorted(found)


def _escapes(root: Path, link: tuple[str, ...]) -> bool:
    """Whether the link at `link` resolves outside `root`, resolved as the sandbox does with
    `root` at /opt: lstat and readlink only (nothing on the host is followed), `..` at the
    top leaves, an absolute target leaves (on the host it names a host path), and so does a
    loop (the kernel would refuse it anyway)."""
    resolved = list(link[:-1])  # real directories (or names that do not exist) below root
    parts: collections.deque[str] = collections.deque()
    target: str | None = os.readlink(root.joinpath(*link))
    hops = 0
    while target is not None:
        if target.startswith("/"):
            return True
        parts.extendleft(reversed(target.split("/")))
        target = None
        while parts and target is None:
            part = parts.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return True
                resolved.pop()
                continue
            path = root.joinpath(*resolved, part)
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                mode = 0  # dangles here: the rest is judged by its names alone
            if stat.S_ISLNK(mode):
                hops += 1
                if hops > _MAX_HOPS:
                    return True
                target = os.readlink(path)  # resolved from the link's own directory
            else:
                resolved.append(part)
    return False
