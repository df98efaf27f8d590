"""Nothing is lost when the server is killed between two requests."""

from __future__ import annotations

import signal
import subprocess

from helpers import ACCESS_KEY, SECRET_KEY, create_function, start_server


def test_kill_9_and_restart_keeps_everything(tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    first = start_server(data)
    try:
        lam = first.client()
        for i in range(3):
            create_function(lam, f"survivor-{i}", wait=False, Tags={"i": str(i)})
        # The last one is killed while still Pending: the restart finishes its transition.
        lam.update_function_configuration  # noqa: B018 - keep the client warm
    finally:
        first.kill(signal.SIGKILL)
    second = start_server(data)
    try:
        lam = second.client()
        names = sorted(f["FunctionName"] for f in lam.list_functions()["Functions"])
        assert names == ["survivor-0", "survivor-1", "survivor-2"]
        for i in range(3):
            lam.get_waiter("function_active_v2").wait(FunctionName=f"survivor-{i}")
            got = lam.get_function(FunctionName=f"survivor-{i}")
            assert got["Tags"] == {"i": str(i)}
            assert got["Configuration"]["State"] == "Active"
    finally:
        second.kill()


def test_aws_cli_smoke(server) -> None:  # noqa: ANN001
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": "/usr/bin:/bin",
    }
    import os
    import sys

    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    out = subprocess.run(
        [aws, "lambda", "get-account-settings", "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"ConcurrentExecutions": 1000' in out.stdout
