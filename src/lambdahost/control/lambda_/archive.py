"""Validate and unpack a function or layer zip without trusting anything inside it.

`unpack_zip()` extracts into a hidden sibling of `dest` and renames it into place only when
everything succeeded, so `dest` is either complete or absent. Nothing in the archive is
trusted: names are checked before anything is written, sizes are counted from the bytes
actually decompressed (64 KiB at a time, so memory stays flat on a zip bomb), files are
created with O_EXCL|O_NOFOLLOW, and symlinks are created last and then resolved on disk,
so no write ever passes through a link and no link may point outside the tree.

Only STORED and DEFLATED entries are accepted: Python's bzip2/LZMA readers decompress a
whole input block without an output bound, which would let a tiny block expand to gigabytes.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = ["ArchiveError", "UnpackedArchive", "unpack_zip"]

CHUNK_SIZE = 64 * 1024
RATIO_FLOOR = 16 * 1024 * 1024  # compression ratios are only judged past this many bytes
MAX_LINK_TARGET = 4096  # PATH_MAX
UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."

_DRIVE = re.compile(r"[A-Za-z]:")
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER_SIZE = 30
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


class ArchiveError(ValueError):
    """The archive is unusable or hostile; the message is meant for the API user."""


@dataclass(frozen=True)
class UnpackedArchive:
    path: Path
    unzipped_bytes: int
    entries: int


def unpack_zip(
    data: bytes | Path,
    dest: Path,
    *,
    max_unzipped_bytes: int = 262_144_000,
    max_entries: int = 50_000,
    max_ratio: int = 250,
) -> UnpackedArchive:
    """Unpack the zip `data` (bytes or a file) into the new directory `dest`.

    Raises ArchiveError for anything malformed or unsafe, FileExistsError if `dest` exists.
    Directories get mode 0755, files 0644 (0755 when the zip marks them executable).
    `max_ratio` bounds uncompressed/compressed size per entry and overall, once past 16 MiB.
    """
    dest = Path(dest)
    if os.path.lexists(dest):
        raise FileExistsError(f"{dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    limits = _Limits(max_unzipped_bytes, max_entries, max_ratio)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
    try:
        with _opened(data) as (source, archive_size):
            extractor = _Extractor(staging, limits, archive_size)
            extractor.extract(_read_directory(source, archive_size, limits))
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return UnpackedArchive(dest, extractor.unzipped_bytes, extractor.entries)


@dataclass(frozen=True)
class _Limits:
    unzipped_bytes: int
    entries: int
    ratio: int

    def too_big(self) -> ArchiveError:
        return ArchiveError(f"Unzipped size must be smaller than {self.unzipped_bytes} bytes")


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # normalised path components, never empty, never ".."
    kind: Literal["dir", "file", "link"]

    @property
    def name(self) -> str:
        return "/".join(self.parts)


@contextmanager
def _opened(data: bytes | Path) -> Iterator[tuple[BinaryIO, int]]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield io.BytesIO(data), len(data)
        return
    with open(data, "rb") as source:
        yield source, os.fstat(source.fileno()).st_size


# --- reading and vetting the central directory (nothing is written yet) --------------------


@dataclass
class _Directory:
    archive: zipfile.ZipFile
    entries: list[_Entry] = field(default_factory=list)


def _read_directory(source: BinaryIO, archive_size: int, limits: _Limits) -> _Directory:
    bound = _central_entry_bound(source, archive_size)
    if bound is not None and bound > limits.entries:
        raise _too_many_entries(limits)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, OSError):
        raise ArchiveError(UNZIP_FAILED) from None
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise _too_many_entries(limits)
    _check_no_overlap(infos, getattr(archive, "start_dir", None))
    directory = _Directory(archive)
    seen: dict[tuple[str, ...], _Entry] = {}
    declared_bytes = 0
    for info in infos:
        entry = _vet(info)
        if entry is None:
            continue  # the root directory itself ("./")
        if entry.parts in seen:
            raise ArchiveError(f"{UNZIP_FAILED} Duplicate entry: {_show(entry.name)}.")
        seen[entry.parts] = entry
        declared_bytes += info.file_size if entry.kind == "file" else 0
        directory.entries.append(entry)
    if declared_bytes > limits.unzipped_bytes:
        raise limits.too_big()  # fail fast; real bytes are counted again while extracting
    for entry in directory.entries:
        for depth in range(1, len(entry.parts)):
            parent = seen.get(entry.parts[:depth])
            if parent is not None and parent.kind != "dir":
                raise ArchiveError(
                    f"{UNZIP_FAILED} Entry {_show(entry.name)} is inside "
                    f"{_show(parent.name)}, which is not a directory."
                )
    return directory


def _vet(info: zipfile.ZipInfo) -> _Entry | None:
    name = info.orig_filename  # zipfile truncates `filename` at a NUL; the original keeps it
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{UNZIP_FAILED} Encrypted entries are not supported: {_show(name)}.")
    unsafe = _unsafe_reason(name)
    if unsafe:
        raise ArchiveError(f"{UNZIP_FAILED} Entry {_show(name)} {unsafe}.")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    mode = info.external_attr >> 16
    kind: Literal["dir", "file", "link"]
    if name.endswith("/") or stat.S_ISDIR(mode):
        kind = "dir"
    elif stat.S_ISLNK(mode):
        kind = "link"
    else:
        kind = "file"
    if not parts:
        if kind == "dir":
            return None
        raise ArchiveError(f"{UNZIP_FAILED} Entry {_show(name)} has no file name.")
    if kind != "dir" and info.compress_type not in _SUPPORTED_METHODS:
        raise ArchiveError(
            f"{UNZIP_FAILED} Entry {_show(name)} uses an unsupported compression method "
            f"({info.compress_type}); use deflate."
        )
    return _Entry(info, parts, kind)


def _unsafe_reason(name: str) -> str | None:
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash (use '/' as the path separator)"
    if name.startswith("/"):
        return "has an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "points outside the archive ('..')"
    return None


def _check_no_overlap(infos: list[zipfile.ZipInfo], central_directory: int | None) -> None:
    """Reject entries whose data overlap (the 'overlapping files' zip bomb, Fifield 2019)."""
    end = 0
    for info in sorted(infos, key=lambda info: info.header_offset):
        if info.header_offset < end:
            raise ArchiveError(f"{UNZIP_FAILED} Entries overlap (possible zip bomb).")
        # A lower bound on where this entry's data ends: the real end adds name and extra.
        end = info.header_offset + _LOCAL_HEADER_SIZE + info.compress_size
    if central_directory is not None and end > central_directory:
        raise ArchiveError(f"{UNZIP_FAILED} Entries overlap (possible zip bomb).")


def _central_entry_bound(source: BinaryIO, size: int) -> int | None:
    """An upper bound on the entries zipfile will parse, found without parsing them.

    zipfile builds one object per central-directory record, whatever the end record claims,
    so count the record signatures in the bytes it will read: locating the directory the way
    zipfile does (zip64 record right before its locator), reading it in chunks.
    """
    tail_size = min(size, _EOCD.size + 0xFFFF)
    tail_start = size - tail_size
    source.seek(tail_start)
    tail = source.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return None  # not a zip: zipfile will say so
    directory_size = _EOCD.unpack_from(tail, at)[5]
    directory_end = tail_start + at
    record_at = at - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size
    if record_at >= 0 and tail[record_at : record_at + 4] == b"PK\x06\x06":
        directory_size = _ZIP64_EOCD.unpack_from(tail, record_at)[8]
        directory_end = tail_start + record_at
    position = max(0, directory_end - directory_size)
    count, carry = 0, b""
    while position < directory_end:
        source.seek(position)
        chunk = carry + source.read(min(CHUNK_SIZE * 16, directory_end - position))
        if len(chunk) == len(carry):
            break
        count += chunk.count(_CENTRAL_SIGNATURE)
        position += len(chunk) - len(carry)
        carry = chunk[-3:]  # a signature split across chunks is counted in the next one
    return count


def _too_many_entries(limits: _Limits) -> ArchiveError:
    return ArchiveError(f"{UNZIP_FAILED} The archive has more than {limits.entries} entries.")


def _show(name: str) -> str:
    return repr(name if len(name) <= 200 else name[:200] + "…")


# --- writing ---------------------------------------------------------------------------------


class _Extractor:
    """Writes vetted entries below `root`: directories, then files, then symlinks."""

    def __init__(self, root: Path, limits: _Limits, archive_size: int) -> None:
        self.root = root
        self.limits = limits
        self.archive_size = archive_size
        self.unzipped_bytes = 0
        self.entries = 0
        self._made: set[tuple[str, ...]] = set()

    def extract(self, directory: _Directory) -> None:
        order = {"dir": 0, "file": 1, "link": 2}
        links: list[_Entry] = []
        for entry in sorted(directory.entries, key=lambda entry: order[entry.kind]):
            try:
                if entry.kind == "dir":
                    self._ensure_dir(entry.parts)
                elif entry.kind == "file":
                    self._write_file(directory.archive, entry)
                else:
                    self._write_link(directory.archive, entry)
                    links.append(entry)
            except ArchiveError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError):
                raise ArchiveError(
                    f"{UNZIP_FAILED} Entry {_show(entry.name)} is corrupt."
                ) from None
            except OSError as error:
                raise ArchiveError(
                    f"{UNZIP_FAILED} Cannot create {_show(entry.name)}: {error.strerror}."
                ) from None
            self.entries += 1
        self._check_links_stay_inside(links)

    def _ensure_dir(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in self._made:
                continue
            path = self.root.joinpath(*prefix)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise ArchiveError(
                        f"{UNZIP_FAILED} {_show('/'.join(prefix))} is both a file and a directory."
                    ) from None
            os.chmod(path, 0o755)  # a real directory (checked above); mkdir's mode is umasked
            self._made.add(prefix)

    def _write_file(self, archive: zipfile.ZipFile, entry: _Entry) -> None:
        self._ensure_dir(entry.parts[:-1])
        mode = 0o755 if (entry.info.external_attr >> 16) & 0o111 else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root.joinpath(*entry.parts), flags, 0o600)
        with open(fd, "wb") as out, archive.open(entry.info) as source:
            written = 0
            while chunk := source.read(CHUNK_SIZE):
                written += len(chunk)
                self._count(entry, written, len(chunk))
                out.write(chunk)
            if written != entry.info.file_size:  # zipfile stops early only for short headers
                raise ArchiveError(f"{UNZIP_FAILED} Entry {_show(entry.name)} is corrupt.")
            os.fchmod(out.fileno(), mode)

    def _count(self, entry: _Entry, entry_bytes: int, chunk_bytes: int) -> None:
        self.unzipped_bytes += chunk_bytes
        if self.unzipped_bytes > self.limits.unzipped_bytes:
            raise self.limits.too_big()
        ratio = self.limits.ratio
        entry_bomb = entry_bytes > RATIO_FLOOR and entry_bytes > ratio * entry.info.compress_size
        total = self.unzipped_bytes
        archive_bomb = total > RATIO_FLOOR and total > ratio * self.archive_size
        if entry_bomb or archive_bomb:
            raise ArchiveError(
                f"{UNZIP_FAILED} Entry {_show(entry.name)} expands more than {ratio} times "
                "(possible zip bomb)."
            )

    def _write_link(self, archive: zipfile.ZipFile, entry: _Entry) -> None:
        with archive.open(entry.info) as source:
            raw = source.read(MAX_LINK_TARGET + 1)
        target = raw.decode("utf-8", "surrogateescape")
        parent = posixpath.dirname(entry.name)
        resolved = posixpath.normpath(posixpath.join(parent, target)) if target else ""
        if (
            not target
            or len(raw) > MAX_LINK_TARGET
            or "\x00" in target
            or target.startswith("/")
            or resolved == ".."
            or resolved.startswith("../")
        ):
            raise self._escaping_link(entry)
        self._ensure_dir(entry.parts[:-1])
        os.symlink(target, self.root.joinpath(*entry.parts))

    def _check_links_stay_inside(self, links: list[_Entry]) -> None:
        # Each link alone resolved inside; a chain of links may still not (a/b/l -> ../..,
        # then m -> a/b/l/..), so resolve them on disk now that they all exist.
        root = os.path.realpath(self.root)
        for entry in links:
            resolved = os.path.realpath(self.root.joinpath(*entry.parts))
            if resolved != root and not resolved.startswith(root + os.sep):
                raise self._escaping_link(entry)

    def _escaping_link(self, entry: _Entry) -> ArchiveError:
        return ArchiveError(
            f"{UNZIP_FAILED} Symbolic link {_show(entry.name)} points outside the archive."
        )
