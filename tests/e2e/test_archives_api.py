"""Hostile archives are refused with a clear 400, and nothing escapes the data dir."""

from __future__ import annotations

import io
import zipfile

import pytest
from botocore.exceptions import ClientError
from helpers import ROLE, make_zip, unique


def symlink_zip(target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, target)
    return buffer.getvalue()


def bomb_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.bin", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(300):
                f.write(chunk)
    return buffer.getvalue()


def many_entries_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"f{i}", b"")
    return buffer.getvalue()


HOSTILE = {
    "not-a-zip": b"this is not a zip file at all",
    "truncated": make_zip({"app.py": "x = 1\n" * 100})[:-30],
    "dot-dot": make_zip({"../evil.py": "x = 1"}),
    "absolute": make_zip({"/etc/evil.py": "x = 1"}),
    "symlink-escape": symlink_zip("../../../../etc/passwd"),
    "bomb": bomb_zip(),
    "too-many-entries": many_entries_zip(60_000),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_rejected(lam, server, kind: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.create_function(
            FunctionName=unique("hostile"),
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": HOSTILE[kind]},
        )
    error = exc.value.response["Error"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "InvalidParameterValueException", error
    assert error["Message"]
    for path in server.data_dir.parent.rglob("evil.py"):
        pytest.fail(f"archive wrote {path}")


def test_internal_symlink_is_kept(lam) -> None:
    name = unique("symlink-ok")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": symlink_zip("app.py")},
    )
    assert lam.get_function(FunctionName=name)["Configuration"]["CodeSize"] > 0


def test_oversized_zip_is_refused(raw_lam) -> None:
    with pytest.raises(ClientError) as exc:
        raw_lam.create_function(
            FunctionName=unique("huge"),
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": b"PK" + b"\0" * (51 * 1024 * 1024)},
        )
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
