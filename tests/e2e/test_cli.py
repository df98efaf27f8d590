"""The client commands, `lambdahost invoke` and `lambdahost logs`, against the test server."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ACCESS_KEY, SECRET_KEY, Server, create_function, free_port, make_zip, unique

from lambdahost.cli.logs import group_for, parse_since

APP = make_zip(
    {
        "app.py": (
            "def handler(event, context):\n"
            "    print('cli says', event.get('word'))\n"
            "    if event.get('fail'):\n"
            "        raise ValueError('boom from cli')\n"
            "    return {'echo': event}\n"
        )
    }
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any credentials, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "LAMBDAHOST_ACCESS", "LAMBDAHOST_SECRET"))
    }
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    env.update(extra)
    return env


CREDS = {"LAMBDAHOST_ACCESS_KEY_ID": ACCESS_KEY, "LAMBDAHOST_SECRET_ACCESS_KEY": SECRET_KEY}


def cli(
    server: Server, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "lambdahost.cli.main", *args, "--endpoint-url", server.url]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env or clean_env(**CREDS), timeout=120
    )


@pytest.fixture(scope="module")
def fn(lam) -> str:  # noqa: ANN001
    name = unique("cli")
    create_function(lam, name, APP)
    return name


def test_invoke_prints_pretty_payload_and_log_tail(server: Server, fn: str) -> None:
    result = cli(server, "invoke", fn, "--payload", '{"word": "hi"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"echo": {"word": "hi"}}
    assert '\n  "echo"' in result.stdout  # pretty, not one line
    assert "START RequestId:" in result.stderr and "cli says hi" in result.stderr


def test_invoke_function_error_exits_1_with_the_error(server: Server, fn: str) -> None:
    result = cli(server, "invoke", fn, "--payload", '{"fail": true}')
    assert result.returncode == 1
    assert "ValueError: boom from cli" in result.stderr
    assert json.loads(result.stdout)["errorType"] == "ValueError"


def test_invoke_payload_from_file_and_bad_json(server: Server, fn: str, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"word": "from-file"}')
    result = cli(server, "invoke", fn, "--payload", f"@{event}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"echo": {"word": "from-file"}}
    bad = cli(server, "invoke", fn, "--payload", "{nope")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr


def test_invoke_missing_function_and_unreachable_server(server: Server) -> None:
    missing = cli(server, "invoke", unique("missing"))
    assert missing.returncode == 1
    assert "ResourceNotFoundException" in missing.stderr
    down = subprocess.run(
        [sys.executable, "-m", "lambdahost.cli.main", "invoke", "x"]
        + ["--endpoint-url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        env=clean_env(**CREDS),
        timeout=120,
    )
    assert down.returncode == 1 and "Cannot reach lambdahost" in down.stderr


def test_credentials_come_from_the_data_dir(server: Server, fn: str, tmp_path: Path) -> None:
    (tmp_path / "credentials").write_text(
        f"aws_access_key_id={ACCESS_KEY}\naws_secret_access_key={SECRET_KEY}\n"
    )
    result = cli(
        server,
        "invoke",
        fn,
        "--data-dir",
        str(tmp_path),
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    # Wrong keys in the usual AWS variables win over the file, and fail.
    wrong = clean_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY="wrong")
    result = cli(server, "invoke", fn, "--data-dir", str(tmp_path), env=wrong)
    assert result.returncode == 1
    assert "SignatureDoesNotMatch" in result.stderr or "InvalidSignature" in result.stderr


def test_async_invoke_then_logs(server: Server, fn: str) -> None:
    word = unique("async")
    queued = cli(server, "invoke", fn, "--async", "--payload", json.dumps({"word": word}))
    assert queued.returncode == 0, queued.stderr
    assert "Queued" in queued.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = cli(server, "logs", fn, "--since", "5m")
        if f"cli says {word}" in shown.stdout:
            break
        time.sleep(0.5)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if f"cli says {word}" in x)
    assert "[$LATEST]" in line  # the stream is shown
    assert "REPORT RequestId:" in shown.stdout


def test_logs_of_a_function_never_run(server: Server) -> None:
    result = cli(server, "logs", unique("never"))
    assert result.returncode == 1 and "No log group" in result.stderr


def test_logs_follow_prints_new_events(server: Server, fn: str) -> None:
    argv = [sys.executable, "-m", "lambdahost.cli.main", "logs", fn, "--follow"]
    argv += ["--interval", "0.3", "--since", "1s", "--endpoint-url", server.url]
    follower = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(**CREDS)
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(x) for x in follower.stdout],
        daemon=True,  # type: ignore[union-attr]
    ).start()
    try:
        time.sleep(1.5)
        words = [unique("follow") for _ in range(2)]
        for word in words:
            assert (
                cli(server, "invoke", fn, "--payload", json.dumps({"word": word})).returncode == 0
            )
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(any(w in x for x in seen) for w in words):
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
        assert all(sum(w in x for x in seen) == 1 for w in words), seen  # each exactly once
    finally:
        follower.kill()
        follower.wait(10)


def test_since_and_group_names() -> None:
    assert parse_since("10m", now=1000.0) == 400_000
    assert parse_since("2h", now=10_000.0) == 2_800_000
    assert parse_since("2026-01-01T00:00:00+00:00") == 1_767_225_600_000
    assert group_for("fn") == "/aws/lambda/fn"
    assert group_for("arn:aws:lambda:us-east-1:000000000000:function:fn") == "/aws/lambda/fn"
    assert group_for("arn:aws:lambda:us-east-1:000000000000:function:fn:prod") == "/aws/lambda/fn"
    assert group_for("fn:prod") == "/aws/lambda/fn"
    assert group_for("/custom/group") == "/custom/group"


def test_serve_on_an_unfit_host_says_why_without_a_traceback(tmp_path: Path) -> None:
    """A host that cannot run sandboxes (here: an unusable uid range) gets one clear sentence
    and exit status 1, before "listening", never a traceback."""
    env = {
        **os.environ,
        "LAMBDAHOST_SANDBOX_UIDS": "nonsense",
        "LAMBDAHOST_ACCESS_KEY_ID": ACCESS_KEY,
        "LAMBDAHOST_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    argv = [sys.executable, "-m", "lambdahost.cli.main", "serve", "--port", str(free_port())]
    argv += ["--data-dir", str(tmp_path / "data")]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "lambdahost cannot start:" in output and "LAMBDAHOST_SANDBOX_UIDS" in output
    assert "Traceback" not in output and "listening" not in output
