"""Isolation break 2 of the red-team pass: a descriptor the server holds (an inheritable
directory, say) must never reach a sandbox, whichever backend starts it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Server, create_function, make_zip, start_server, unique

# Lists its descriptors and says which lead to a directory (through /proc/self/fd/N, a magic
# link that works even for a directory outside the sandbox's root).
LISTER = make_zip(
    {
        "app.py": """
import os, time

def handler(event, context):
    numbers = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    found = {}
    for n in numbers:
        try:
            found[n] = [os.readlink(f"/proc/self/fd/{n}"), os.path.isdir(f"/proc/self/fd/{n}")]
        except OSError:
            pass  # the listing's own descriptor, closed since
    time.sleep(event.get("sleep", 0))
    return found
"""
    }
)


@pytest.fixture(scope="module", params=["zygote", "bwrap"])
def leaky_server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[tuple[Server, Path]]:  # noqa: ANN001
    secret_dir = tmp_path_factory.mktemp("host-secret")
    fd = os.open(secret_dir, os.O_RDONLY | os.O_DIRECTORY)  # inheritable, as os.open makes it
    os.set_inheritable(fd, True)
    try:
        data = tmp_path_factory.mktemp(f"fds-{request.param}") / "data"
        server = start_server(data, "--sandbox", request.param, pass_fds=(fd,))
    finally:
        os.close(fd)
    yield server, secret_dir
    server.kill()


def holders(path: Path, exclude: set[int]) -> list[int]:
    """Host pids (other than `exclude`) with a descriptor open on `path`."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid in exclude:
            continue
        try:
            for entry in os.scandir(f"/proc/{pid}/fd"):
                if os.readlink(entry.path) == str(path):
                    found.append(pid)
                    break
        except OSError:
            continue
    return found


def test_server_descriptors_never_reach_a_sandbox(leaky_server: tuple[Server, Path]) -> None:
    server, secret_dir = leaky_server
    assert holders(secret_dir, set()) == [server.process.pid]  # the server holds it
    lam = server.client("lambda")
    name = unique("fds")
    create_function(lam, name, LISTER)
    response = lam.invoke(FunctionName=name, Payload=b'{"sleep": 0}')
    assert "FunctionError" not in response
    descriptors = json.loads(response["Payload"].read())
    assert not [d for d in descriptors.values() if d[1]], descriptors  # no directory
    # stdin on /dev/null, output pipes, the runtime's own Runtime API connection
    kinds = {target.split(":")[0] for target, _ in descriptors.values()}
    assert kinds <= {"/dev/null", "pipe", "socket"}, descriptors
    # Every process of every sandbox, agent and bwrap's monitor included (seen from the host:
    # the function itself may not look at its agent's descriptors).
    assert holders(secret_dir, {server.process.pid}) == []
