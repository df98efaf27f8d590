"""Host capacity (issue #10 item 8): live environments hold their MemorySize and their
EphemeralStorage against the host's budgets. A cold start that does not fit evicts idle
environments, least recently used first; with none to evict it is refused with AWS's throttle
(429 TooManyRequestsException), and an asynchronous event refused so is retried, not lost."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    Server,
    create_function,
    make_zip,
    start_server,
    unique,
)

from lambdahost.sandbox.cgroups import CGROUP_ROOT, instance_parent


def no_retries(server: Server, service: str = "lambda"):  # noqa: ANN201 - a botocore client
    """A client that answers with the first response: botocore's `max_attempts` counts retries,
    so the fixtures' clients would retry a throttle once."""
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


# Each environment says which one it is (a value chosen at init), and can be kept busy.
WHO = make_zip(
    {
        "app.py": (
            "import os, time\n"
            "ENV = os.urandom(8).hex()\n"
            "def handler(event, context):\n"
            "    print('RAN', event.get('id'))\n"
            "    time.sleep(event.get('sleep', 0))\n"
            "    return {'env': ENV}\n"
        )
    }
)
# Room for exactly two environments of the size below, in one dimension or the other.
CASES = {
    "memory": (["--memory-budget", "1024"], {"MemorySize": 512}, {"MemorySize": 2048}),
    "disk": (
        ["--disk-budget", "1024"],
        {"MemorySize": 128, "EphemeralStorage": {"Size": 512}},
        {"MemorySize": 128, "EphemeralStorage": {"Size": 2048}},
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def budget(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    flags, size, too_big = CASES[request.param]
    srv = start_server(tmp_path_factory.mktemp(f"budget-{request.param}") / "data", *flags)
    yield request.param, srv, size, too_big
    srv.kill()


def invoke(lam, name: str, event: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: ANN001
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode())
    assert "FunctionError" not in response, response
    return json.loads(response["Payload"].read())


def throttled(lam, name: str) -> ClientError:  # noqa: ANN001
    with pytest.raises(ClientError) as caught:
        lam.invoke(FunctionName=name, Payload=b"{}")
    return caught.value


def assert_host_throttle(error: ClientError) -> None:
    response = error.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert response["Error"]["Code"] == "TooManyRequestsException"
    assert response.get("Reason") == "ConcurrentInvocationLimitExceeded"
    assert int(response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1


def ran_ids(logs, name: str) -> set[str]:  # noqa: ANN001
    try:
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern="RAN")
    except ClientError:
        return set()
    return {e["message"].split()[-1] for e in events["events"] if e["message"].startswith("RAN")}


@pytest.fixture
def busy() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(60)


def test_lru_eviction_then_throttle(budget, busy: list[threading.Thread]) -> None:  # noqa: ANN001
    kind, srv, size, _ = budget
    lam = no_retries(srv)
    a, b, c = (unique(f"cap-{kind}") for _ in range(3))
    for name in (a, b, c):
        create_function(lam, name, WHO, Timeout=30, **size)

    env_a = invoke(lam, a)["env"]
    env_b = invoke(lam, b)["env"]
    invoke(lam, c)  # no room for a third: a, the least recently used, makes room
    assert invoke(lam, b)["env"] == env_b, "b was used more recently than a: it stays warm"
    assert invoke(lam, a)["env"] != env_a, "a was evicted: it starts again"

    # Both environments busy, nothing idle to evict: the third is refused, as AWS throttles.
    answers: dict[str, dict[str, Any]] = {}
    for name in (a, b):

        def hold(name: str = name) -> None:
            answers[name] = invoke(no_retries(srv), name, {"sleep": 4})

        busy.append(threading.Thread(target=hold))
        busy[-1].start()
    time.sleep(1.5)
    assert_host_throttle(throttled(lam, c))
    # An asynchronous event refused the same way stays queued and runs once there is room.
    accepted = lam.invoke(
        FunctionName=c, InvocationType="Event", Payload=json.dumps({"id": "later"}).encode()
    )
    assert accepted["StatusCode"] == 202
    for thread in busy:
        thread.join(60)
    assert set(answers) == {a, b}

    logs = srv.client("logs")
    deadline = time.monotonic() + 30
    while "later" not in ran_ids(logs, c) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "later" in ran_ids(logs, c)
    invoke(lam, c)
    assert "Traceback" not in srv.log()


def test_larger_than_the_budget_is_throttled(budget) -> None:  # noqa: ANN001
    kind, srv, _, too_big = budget
    lam = no_retries(srv)
    name = unique(f"cap-big-{kind}")
    create_function(lam, name, WHO, **too_big)
    error = throttled(lam, name)
    assert_host_throttle(error)
    assert "budget" in error.response["Error"]["Message"]


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
def test_parent_cgroup_is_limited(budget) -> None:  # noqa: ANN001
    kind, srv, _, _ = budget
    parent = instance_parent((srv.data_dir / "sandboxes").resolve())
    memory = CGROUP_ROOT / "memory" / parent
    limit = int((memory / "memory.limit_in_bytes").read_text())
    if kind == "memory":
        assert limit == (1024 + 256) << 20
    else:  # 80 % of this host's memory, plus the margin
        assert limit < int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert int((CGROUP_ROOT / "pids" / parent / "pids.max").read_text()) == pid_max // 2
