"""unpack_zip on normal archives and on hostile ones built byte by byte."""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import pytest

from lambdahost.control.lambda_.archive import UNZIP_FAILED, ArchiveError, unpack_zip

MB = 1024 * 1024
FILE = stat.S_IFREG
LINK = stat.S_IFLNK


def build(*entries: tuple[str, bytes | str] | tuple[str, bytes | str, int], **kw) -> bytes:
    """A zip of (name, data[, unix mode]) entries, deflated unless told otherwise."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are part of some tests
        with zipfile.ZipFile(buffer, "w", kw.get("compression", zipfile.ZIP_DEFLATED)) as zf:
            for name, data, *mode in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = kw.get("compression", zipfile.ZIP_DEFLATED)
                info.create_system = 3
                default = 0o40755 if name.endswith("/") else FILE | 0o644
                info.external_attr = (mode[0] if mode else default) << 16
                zf.writestr(info, data)
    return buffer.getvalue()


def patch_headers(data: bytes, *, offset_in_central: int, offset_in_local: int, value: bytes):
    """Overwrite a field of every local and central header (same value everywhere)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", offset_in_local), (b"PK\x01\x02", offset_in_central)):
        at = out.find(signature)
        while at >= 0:
            out[at + offset : at + offset + len(value)] = value
            at = out.find(signature, at + 4)
    return bytes(out)


def tree(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


def assert_rejected(
    data: bytes, box: Path, match: str | None = None, **limits: int
) -> ArchiveError:
    before = tree(box)
    with pytest.raises(ArchiveError, match=match) as caught:
        unpack_zip(data, box / "out" / "dest", **limits)
    assert tree(box) == before, "something was written (or left behind) outside dest"
    assert caught.value.args[0].startswith(UNZIP_FAILED) or "Unzipped size" in str(caught.value)
    return caught.value


# --- normal archives ------------------------------------------------------------------------


def test_normal_archive(box: Path) -> None:
    data = build(
        ("bootstrap", "#!/bin/sh\necho hi\n", FILE | 0o755),
        ("handler.py", "def handler(e, c):\n    return e\n"),
        ("lib/", b""),
        ("lib/pkg/__init__.py", ""),
        ("lib/pkg/deep/data.bin", bytes(range(256)) * 1000),
        ("lib/libfoo.so.1", b"\x7fELF"),
        ("lib/libfoo.so", "libfoo.so.1", LINK | 0o777),
        ("bin/tool", "../lib/pkg/deep/data.bin", LINK | 0o777),
        ("./dot/./file.txt", "x"),
        ("implicit/dir/only.txt", "y", FILE | 0o600),
    )
    result = unpack_zip(data, box / "out" / "dest")
    dest = box / "out" / "dest"
    assert result.path == dest
    assert result.entries == 10
    assert result.unzipped_bytes == 18 + 32 + 256_000 + 4 + 1 + 1  # link targets not counted
    assert (dest / "lib/pkg/deep/data.bin").read_bytes() == bytes(range(256)) * 1000
    assert os.readlink(dest / "lib/libfoo.so") == "libfoo.so.1"
    assert (dest / "lib/libfoo.so").read_bytes() == b"\x7fELF"
    assert (dest / "bin/tool").read_bytes() == bytes(range(256)) * 1000
    assert (dest / "dot/file.txt").read_text() == "x"
    mode = lambda p: stat.S_IMODE(os.lstat(dest / p).st_mode)  # noqa: E731
    assert mode("bootstrap") == 0o755
    assert mode("handler.py") == 0o644
    assert mode("implicit/dir/only.txt") == 0o644  # readable by the sandbox's uid
    assert mode(".") == mode("lib") == mode("implicit/dir") == mode("bin") == 0o755
    assert [p for p in os.listdir(box / "out") if p != "dest"] == []  # no staging left


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged uid")
def test_unprivileged_uid_can_read_and_run(tmp_path: Path) -> None:
    public = Path(tempfile.mkdtemp(prefix="archive-test-"))  # tmp_path's parents are 0700
    try:
        os.chmod(public, 0o755)
        data = build(
            ("bootstrap", "#!/bin/sh\ncat data/x.txt\n", FILE | 0o700), ("data/x.txt", "ok")
        )
        dest = unpack_zip(data, public / "dest").path
        run = subprocess.run(["./bootstrap"], cwd=dest, user=65534, capture_output=True)
        assert run.stdout == b"ok", run.stderr
    finally:
        shutil.rmtree(public)


def test_windows_zip_without_unix_modes_and_path_input(box: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        info = zipfile.ZipInfo("app/main.py")
        info.create_system = 0
        info.external_attr = 0x20  # MS-DOS archive bit, no unix mode
        zf.writestr(info, "print(1)")
    source = box / "code.zip"
    source.write_bytes(buffer.getvalue())
    result = unpack_zip(source, box / "out" / "dest")
    assert stat.S_IMODE((result.path / "app/main.py").stat().st_mode) == 0o644


def test_zip_cli_archive_with_symlinks(box: Path) -> None:
    if shutil.which("zip") is None:
        pytest.skip("zip not installed")
    src = box / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "bootstrap").write_text("#!/bin/sh\n")
    (src / "bootstrap").chmod(0o755)
    (src / "pkg" / "real.txt").write_text("real")
    (src / "pkg" / "alias.txt").symlink_to("real.txt")
    subprocess.run(["zip", "-qry", str(box / "a.zip"), "."], cwd=src, check=True)
    dest = unpack_zip(box / "a.zip", box / "out" / "dest").path
    assert (dest / "pkg" / "alias.txt").is_symlink()
    assert (dest / "pkg" / "alias.txt").read_text() == "real"
    assert os.access(dest / "bootstrap", os.X_OK)


def test_dest_must_not_exist(box: Path) -> None:
    (box / "out" / "dest").mkdir()
    with pytest.raises(FileExistsError):
        unpack_zip(build(("a", "b")), box / "out" / "dest")


def test_nested_zip_is_just_a_file(box: Path) -> None:
    inner = build(("inner.txt", "x"))
    result = unpack_zip(build(("layer.zip", inner)), box / "out" / "dest")
    assert (result.path / "layer.zip").read_bytes() == inner


# --- hostile archives -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "a/../../evil",
        "/abs",
        "//abs",
        "C:/windows",
        "c:evil",
        "..\\evil",
        "a\\..\\..\\evil",
        "\\abs",
        "..",
    ],
)
def test_unsafe_names(box: Path, name: str) -> None:
    assert_rejected(build((name, "pwned")), box)


def test_nul_byte_in_name(box: Path) -> None:
    data = build(("okXname", "x"))
    data = data.replace(b"okXname", b"ok\x00name")  # zipfile would truncate the name at NUL
    error = assert_rejected(data, box)
    assert "NUL" in str(error)


@pytest.mark.parametrize(
    "entries",
    [
        [("a", "1"), ("a", "2")],
        [("a", "1"), ("./a", "2")],
        [("a/", b""), ("a", "2")],
        [("a", "1"), ("a/b", "2")],  # a file used as a directory
    ],
)
def test_duplicates_and_conflicts(box: Path, entries) -> None:
    assert_rejected(build(*entries), box)


@pytest.mark.parametrize(
    "target",
    ["../outside", "../../outside", "/etc/passwd", "/", "sub/../..", "", "a\x00b"],
)
def test_escaping_symlinks(box: Path, target: str) -> None:
    assert_rejected(build(("link", target, LINK | 0o777)), box, match="outside the archive")


def test_symlink_chain_escape(box: Path) -> None:
    # Each link alone looks inside; resolved on disk, m -> sub/x/a/.. -> (root)/.. escapes.
    data = build(
        ("sub/x/a", "../..", LINK | 0o777),
        ("m", "sub/x/a/..", LINK | 0o777),
    )
    assert_rejected(data, box, match="outside the archive")


@pytest.mark.parametrize(
    "entries",
    [
        [("a", ".", LINK | 0o777), ("a/../../outside/x", "pwned")],
        [("a", "../outside", LINK | 0o777), ("a/x", "pwned")],
        [("a", "sub", LINK | 0o777), ("sub/", b""), ("a/x", "pwned")],
        [("a", "/tmp", LINK | 0o777), ("a/x", "pwned")],
    ],
)
def test_symlink_then_traverse(box: Path, entries) -> None:
    assert_rejected(build(*entries), box)
    assert not (box / "outside" / "x").exists()


def test_bomb_over_size_limit(box: Path) -> None:
    bomb = _zeros_zip(box, 300)
    error = assert_rejected(bomb, box)
    assert str(error) == "Unzipped size must be smaller than 262144000 bytes"


def test_bomb_ratio_memory_stays_flat(box: Path) -> None:
    bomb = _zeros_zip(box, 200)  # under the size limit, so it really streams
    assert len(bomb) < 250_000
    tracemalloc.start()
    try:
        error = assert_rejected(bomb, box, match="possible zip bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "expands more than 250 times" in str(error)
    assert peak < 4 * MB, f"peak Python memory {peak} bytes"


def test_real_bytes_are_counted_not_headers(box: Path) -> None:
    # Exactly at the limit passes; one byte less fails, counted while streaming.
    data = build(("a", b"x" * 1000), ("b", b"y" * 1000))
    assert unpack_zip(data, box / "out" / "ok", max_unzipped_bytes=2000).unzipped_bytes == 2000
    assert_rejected(data, box, match="smaller than 1999 bytes", max_unzipped_bytes=1999)


@pytest.mark.parametrize("declared", [10, 5 * MB])
def test_headers_lying_about_sizes(box: Path, declared: int) -> None:
    data = build(("payload", os.urandom(1000) + bytes(MB)))
    value = struct.pack("<L", declared)
    data = patch_headers(data, offset_in_central=24, offset_in_local=22, value=value)
    assert_rejected(data, box)


def test_overlapping_entries(box: Path) -> None:
    data = build(("a", b"A" * 100), ("b", b"B" * 100), compression=zipfile.ZIP_STORED)
    # Stretch a's compressed size over b's local header (the overlapping-files zip bomb).
    central = data.find(b"PK\x01\x02")
    out = bytearray(data)
    out[central + 20 : central + 24] = struct.pack("<L", 150)
    assert_rejected(bytes(out), box, match="overlap")


def test_too_many_entries(box: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for index in range(100_000):
            zf.writestr(f"f{index}", b"")
    assert_rejected(buffer.getvalue(), box, match="more than 50000 entries")
    # The end record may lie about the count: the directory itself is what gets bounded,
    # before zipfile builds an object per entry.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for index in range(60_000):
            zf.writestr(f"f{index}", b"")
    lying = bytearray(buffer.getvalue())
    end = lying.rfind(b"PK\x05\x06")
    lying[end + 8 : end + 12] = struct.pack("<2H", 5, 5)
    data = bytes(lying)
    tracemalloc.start()
    try:
        assert_rejected(data, box, match="more than 1000 entries", max_entries=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MB, f"peak Python memory {peak} bytes"
    small = build(*[(f"f{i}", "") for i in range(11)])
    assert_rejected(small, box, match="more than 10 entries", max_entries=10)


def test_encrypted_entry(box: Path) -> None:
    data = patch_headers(
        build(("secret", "x")), offset_in_central=8, offset_in_local=6, value=b"\x01"
    )
    assert_rejected(data, box, match="Encrypted")


def test_unsupported_compression(box: Path) -> None:
    assert_rejected(build(("a", "x" * 100), compression=zipfile.ZIP_BZIP2), box, match="deflate")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a zip at all",
        os.urandom(4096),
        b"PK\x03\x04" + os.urandom(100),
    ],
)
def test_garbage(box: Path, data: bytes) -> None:
    error = assert_rejected(data, box)
    assert str(error) == UNZIP_FAILED


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated(box: Path, keep: float) -> None:
    data = build(("a.py", os.urandom(20_000)), ("b.py", os.urandom(20_000)))
    assert_rejected(data[: int(len(data) * keep)], box)


def test_corrupt_data_fails_crc(box: Path) -> None:
    data = bytearray(build(("a", b"hello world" * 100), compression=zipfile.ZIP_STORED))
    at = data.find(b"hello world")
    data[at] = ord("j")
    assert_rejected(bytes(data), box, match="corrupt")


def _zeros_zip(box: Path, megabytes: int) -> bytes:
    """A deflated entry of `megabytes` MiB of zeros, written in chunks (never in memory)."""
    path = box / f"zeros{megabytes}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("zeros", "w", force_zip64=True) as entry:
            chunk = bytes(MB)
            for _ in range(megabytes):
                entry.write(chunk)
    data = path.read_bytes()
    path.unlink()
    return data
