"""/proc inside describes the environment, not the host (issue 10's smaller items): with lxcfs
installed, /proc/meminfo's MemTotal is the function's MemorySize, as inside Lambda's microVM."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from conftest import Server, create_function, make_zip, start_server, unique

pytestmark = pytest.mark.skipif(
    not os.access("/usr/bin/lxcfs", os.X_OK), reason="lxcfs is not installed (make install)"
)

READER = make_zip(
    {
        "app.py": """
def handler(event, context):
    fields = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
    return {k: fields[k].strip() for k in ("MemTotal", "MemFree", "SwapTotal")}
"""
    }
)


@pytest.fixture(scope="module", params=["zygote", "bwrap"])
def proc_server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Server]:  # noqa: ANN001
    server = start_server(
        tmp_path_factory.mktemp(f"proc-{request.param}") / "data", "--sandbox", request.param
    )
    yield server
    server.kill()


def test_meminfo_shows_the_functions_memory(proc_server: Server) -> None:
    lam = proc_server.client("lambda")
    name = unique("meminfo")
    create_function(lam, name, READER, MemorySize=256)
    response = lam.invoke(FunctionName=name)
    assert "FunctionError" not in response
    seen = json.loads(response["Payload"].read())
    assert seen["MemTotal"] == f"{256 * 1024} kB", seen
    assert int(seen["MemFree"].split()[0]) <= 256 * 1024
    assert "sees the host's /proc/meminfo" not in proc_server.log()
