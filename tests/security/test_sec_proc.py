"""/proc inside describes the environment, not the host (issue 10's smaller items): with lxcfs
installed, /proc/meminfo's MemTotal is the function's MemorySize, as inside Lambda's microVM."""

from __future__ import annotations

import json
import os

import pytest
from helpers import Server, create_function, make_zip, unique

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


def test_meminfo_shows_the_functions_memory(server_per_backend: Server) -> None:
    lam = server_per_backend.client("lambda")
    name = unique("meminfo")
    create_function(lam, name, READER, MemorySize=256)
    response = lam.invoke(FunctionName=name)
    assert "FunctionError" not in response
    seen = json.loads(response["Payload"].read())
    assert seen["MemTotal"] == f"{256 * 1024} kB", seen
    assert int(seen["MemFree"].split()[0]) <= 256 * 1024
    assert "sees the host's /proc/meminfo" not in server_per_backend.log()
