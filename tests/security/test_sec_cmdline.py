"""A function's environment (its variables, its execution role's credentials) is never on a
host process's command line, where any user of the host could read it, whichever backend
starts the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Server, create_function, make_zip, start_server, unique

CANARY = "canary-" + "7f3a9c1e5b"
READER = make_zip(
    {
        "app.py": (
            "import os\n"
            "def handler(event, context):\n"
            "    return {k: os.environ.get(k) for k in ('SECRET', 'AWS_SESSION_TOKEN')}\n"
        )
    }
)


@pytest.fixture(scope="module", params=["zygote", "bwrap"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp(f"cmdline-{request.param}") / "data",
        env={"LAMBDAHOST_SANDBOX": request.param},
    )
    yield srv
    srv.kill()


def command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes())
            except OSError:
                pass  # gone meanwhile
    return lines


def test_environment_is_not_on_any_command_line(server: Server) -> None:
    lam = server.client()
    name = unique("cmdline")
    create_function(lam, name, READER, Environment={"Variables": {"SECRET": CANARY}})
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    seen = json.loads(response["Payload"].read())
    assert seen["SECRET"] == CANARY  # the function has it ...
    token = seen["AWS_SESSION_TOKEN"]
    assert token
    # ... while its environment is alive (warm), no host process shows it.
    for line in command_lines():
        assert CANARY.encode() not in line
        assert token.encode() not in line
