"""The data dir holds every function's environment, code and the root credentials: 0700, its
files 0600. Only what sandboxes read through bind mounts (code trees, merged layers, the
sandboxes' own /etc) keeps read bits, inside directories nobody else can traverse."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers import create_function, make_zip, start_server, unique

HANDLER = "import layer_mod\ndef handler(event, context):\n    return [layer_mod.WHO, event]\n"
# Trees sandboxes read through bind mounts, as their unprivileged uid: code and merged layers;
# and `sandboxes/`, the backends' node-local state (the sandboxes' /etc, lxcfs's /proc files,
# pid notes, their /tmp mounts), which holds no secret and is walked no further.
SANDBOX_READABLE = ("blobs/unpacked/", "blobs/opt/")
NODE_LOCAL = "sandboxes"
# Directories that keep everyone else out of all the above.
PRIVATE_DIRS = ("", "blobs", "blobs/unpacked", "blobs/opt", "blobs/sha256", "sandboxes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def deploy_and_invoke(server) -> None:  # noqa: ANN001
    lam = server.client("lambda")
    layers = [
        lam.publish_layer_version(
            LayerName=unique("hyg"),
            Content={"ZipFile": make_zip({"python/layer_mod.py": f"WHO = {who!r}\n"})},
        )["LayerVersionArn"]
        for who in ("first", "second")
    ]
    name = unique("hygiene")
    create_function(
        lam,
        name,
        make_zip({"app.py": HANDLER}),
        Layers=layers,
        Environment={"Variables": {"SECRET": "in-the-db"}},
    )
    response = lam.invoke(FunctionName=name, Payload=b'{"k": 1}')
    assert json.loads(response["Payload"].read()) == ["second", {"k": 1}]


def exposed_files(data_dir: Path) -> list[str]:
    """Files with group or other read bits outside the sandbox-readable trees."""
    exposed = []
    for directory, dirs, files in os.walk(data_dir):
        if Path(directory) == data_dir:
            dirs.remove(NODE_LOCAL)
        for name in files:
            path = Path(directory, name)
            rel = str(path.relative_to(data_dir))
            if path.is_symlink() or rel.startswith(SANDBOX_READABLE):
                continue
            if mode(path) & 0o044:
                exposed.append(f"{rel} {oct(mode(path))}")
    return exposed


def check_private(data_dir: Path) -> None:
    assert not (exposed := exposed_files(data_dir)), "\n".join(exposed)
    for private in PRIVATE_DIRS:
        assert mode(data_dir / private) == 0o700, private
    for name in ("lambdahost.db", "lambdahost.db-wal", "lambdahost.db-shm"):
        assert mode(data_dir / name) == 0o600, name


@pytest.mark.parametrize("backend", ["zygote", "bwrap"])
def test_data_dir_is_private(tmp_path: Path, backend: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)  # as an older version (or the umask) left it
    server = start_server(data_dir, "--sandbox", backend)
    try:
        deploy_and_invoke(server)  # sandboxes still read their code through the 0700 dir
        check_private(data_dir)
    finally:
        server.kill()


def test_an_existing_data_dir_is_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        deploy_and_invoke(server)
    finally:
        server.kill()
    # What an older version left: the umask's modes everywhere, and a readable credentials file.
    (data_dir / "credentials").write_text("aws_access_key_id=a\naws_secret_access_key=b\n")
    loosened = [data_dir / private for private in PRIVATE_DIRS]
    loosened += [*(data_dir / "blobs" / "sha256").rglob("*"), data_dir / "credentials"]
    loosened += data_dir.glob("lambdahost.db*")
    for path in loosened:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    server = start_server(data_dir)
    try:
        deploy_and_invoke(server)
        check_private(data_dir)
        assert mode(data_dir / "credentials") == 0o600
    finally:
        server.kill()
