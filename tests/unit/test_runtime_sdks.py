"""Where the managed runtimes' AWS SDKs come from on the host and how environments see them
(`invoke.sdks`), and the sandbox links that carry the Node one to ES modules."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from lambdahost.invoke.sdks import PINS, RuntimeSdks, find_sdks
from lambdahost.runtimes import NODE_SDK_DIR, NODE_SDK_LINK, PYTHON_SDK_DIR, RUNTIMES
from lambdahost.sandbox.api import Link, Mount, SandboxError
from lambdahost.sandbox.rootfs import bwrap_mount_args, check_links


def install(root: Path, runtime: str) -> Path:
    """What `make install` leaves: the SDK directory and copies of the pins beside it."""
    installed = root / runtime
    sdk = installed / Path(RUNTIMES[runtime].sdk or "").name
    sdk.mkdir(parents=True)
    for pin in (PINS / runtime).iterdir():
        (installed / pin.name).write_bytes(pin.read_bytes())
    return sdk


def test_the_runtimes_ship_their_sdks_where_aws_has_them() -> None:
    assert RUNTIMES["python3.11"].sdk == PYTHON_SDK_DIR == "/var/lang/lib/python3.11/site-packages"
    assert RUNTIMES["nodejs20.x"].sdk == NODE_SDK_DIR == "/var/runtime/node_modules"
    assert NODE_SDK_DIR in RUNTIMES["nodejs20.x"].env["NODE_PATH"].split(":")
    assert RUNTIMES["provided.al2023"].sdk is None
    # The pins the project installs from: boto3 and botocore, the JS SDK v3 with its lock.
    assert {p.name for p in (PINS / "python3.11").iterdir()} == {"requirements.txt"}
    assert {p.name for p in (PINS / "nodejs20.x").iterdir()} == {
        "package.json",
        "package-lock.json",
    }


def test_found_sdks_are_mounted_read_only_where_aws_has_them(tmp_path: Path, caplog) -> None:
    python = install(tmp_path, "python3.11")
    node = install(tmp_path, "nodejs20.x")
    with caplog.at_level(logging.WARNING, "lambdahost.invoke"):
        sdks = find_sdks(tmp_path)
    assert not caplog.records
    assert sdks.mounts("python3.11") == [Mount(python, PYTHON_SDK_DIR)]
    assert sdks.mounts("nodejs20.x") == [Mount(node, NODE_SDK_DIR)]
    assert sdks.mounts("provided.al2023") == []
    assert sdks.links("python3.11", None) == ()
    assert sdks.links("nodejs20.x", None) == (Link(NODE_SDK_LINK, NODE_SDK_DIR),)


def test_missing_or_stale_sdks_are_said_once_and_functions_run_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    install(tmp_path, "nodejs20.x")
    (tmp_path / "nodejs20.x" / "package-lock.json").write_text("{}")  # other versions
    monkeypatch.setenv("LAMBDAHOST_RUNTIME_SDKS", str(tmp_path))
    with caplog.at_level(logging.WARNING, "lambdahost.invoke"):
        sdks = find_sdks()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "python3.11 functions run without the AWS SDK" in messages[0]
    assert "make install" in messages[0]
    assert "sdks/nodejs20.x/package-lock.json" in messages[1]
    assert sdks.mounts("python3.11") == [] and sdks.links("python3.11", None) == ()
    assert sdks.mounts("nodejs20.x")  # stale is still an SDK: used, with the warning


def test_layers_with_node_modules_take_the_link_away(tmp_path: Path) -> None:
    """Node searches every parent's node_modules (so /node_modules) before NODE_PATH, where a
    layer's modules are: with the link there, the runtime's SDK would beat a layer's copy."""
    sdks = RuntimeSdks({"nodejs20.x": tmp_path / "sdk"})
    link = (Link(NODE_SDK_LINK, NODE_SDK_DIR),)
    opt = tmp_path / "opt"
    (opt / "python").mkdir(parents=True)
    assert sdks.links("nodejs20.x", opt) == link
    (opt / "nodejs").mkdir()
    (opt / "nodejs" / "node_modules").write_text("a file, not a directory")
    assert sdks.links("nodejs20.x", opt) == link
    (opt / "nodejs" / "node_modules").unlink()
    (opt / "nodejs" / "node20" / "node_modules").mkdir(parents=True)
    assert sdks.links("nodejs20.x", opt) == ()
    # A link in a layer names a sandbox path: never followed on the host, counted as there.
    other = tmp_path / "opt2"
    other.mkdir()
    os.symlink("/opt/elsewhere", other / "nodejs")
    assert sdks.links("nodejs20.x", other) == ()


def test_prepared_makes_mount_points_inside_the_runtime_dir(tmp_path: Path) -> None:
    runtimes = tmp_path / "runtimes"
    runtimes.mkdir()
    sdks = RuntimeSdks({"nodejs20.x": tmp_path / "n", "python3.11": tmp_path / "p"})
    assert sdks.prepared(runtimes) == sdks
    assert (runtimes / "node_modules").is_dir()  # /var/runtime/node_modules: read-only later
    assert not (runtimes / "lib").exists()  # the Python SDK's place is outside /var/runtime
    gone = RuntimeSdks({"nodejs20.x": tmp_path / "n"}).prepared(tmp_path / "missing")
    assert gone == RuntimeSdks({})


def test_links_in_the_root(tmp_path: Path) -> None:
    mounts = [Mount(tmp_path, "/var/runtime"), Mount(tmp_path, "/var/runtime/node_modules")]
    link = Link("/node_modules", "/var/runtime/node_modules")
    assert check_links((link,), mounts) == (link,)
    args = bwrap_mount_args(tmp_path, mounts, 1 << 20, "/", links=(link,))
    at = args.index("--symlink", args.index("/var/runtime/node_modules"))
    assert args[at : at + 3] == ["--symlink", "/var/runtime/node_modules", "/node_modules"]
    for bad in (
        Link("relative", "/x"),
        Link("/var/runtime/x", "/x"),  # inside a read-only mount
        Link("/usr/lib/x", "/x"),  # inside a base directory
        Link("/var", "/x"),  # would hide the mounts below it
        Link("/a/../b", "/x"),
        Link("/empty", ""),
    ):
        with pytest.raises(SandboxError):
            check_links((bad,), mounts)
    with pytest.raises(SandboxError):
        check_links((link, link), mounts)
