"""A burst of first invokes: 200 distinct functions invoked at the same moment.

Every answer is either the function's result or AWS's documented throttle (429
TooManyRequestsException with a Reason), never a 5xx, and the server logs no traceback.
The backend is the server's `--sandbox` flag: extend BACKENDS to run the burst on each."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
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

BACKENDS = ("zygote", "bwrap")
# Echoes the event and says what backs its /tmp: a disk-backed ext4 volume, never a tmpfs.
TMP_PROBE = make_zip(
    {
        "app.py": """
def handler(event, context):
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] == "/tmp":
            event["tmp"] = fields[fields.index("-") + 1]
    return event
"""
    }
)
FUNCTIONS = 200
THROTTLE_REASONS = {
    "ConcurrentInvocationLimitExceeded",
    "FunctionInvocationRateLimitExceeded",
    "ReservedFunctionConcurrentInvocationLimitExceeded",
    "ReservedFunctionInvocationRateLimitExceeded",
    "CallerRateLimitExceeded",
}


@pytest.fixture(scope="module", params=BACKENDS)
def burst_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    srv = start_server(tmp_path_factory.mktemp("burst") / "data", "--sandbox", request.param)
    yield srv
    srv.kill()


def signed_invoke(server: Server, name: str) -> tuple[str, dict[str, str], bytes]:
    """(method path, signed headers, body) of a synchronous invoke, signed ahead of time so
    the burst measures the server, not the signing."""
    path = f"/2015-03-31/functions/{name}/invocations"
    body = json.dumps({"name": name}).encode()
    request = AWSRequest(method="POST", url=server.url + path, data=body)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(request)
    return path, dict(request.headers.items()), body


def wait_active(lam, names: list[str], timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    for name in names:
        while lam.get_function_configuration(FunctionName=name)["State"] != "Active":
            assert time.monotonic() < deadline, f"{name} never became Active"
            time.sleep(0.1)


def burst(server: Server, names: list[str]) -> Iterator[tuple[str, int, dict[str, str], bytes]]:
    """Invoke every function at once, one connection each (opened before the start)."""
    requests = [signed_invoke(server, name) for name in names]
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=120) for _ in names]
    for connection in connections:
        connection.connect()
    answers: list[tuple[int, dict[str, str], bytes] | BaseException | None] = [None] * len(names)
    gate = threading.Barrier(len(names))

    def run(index: int) -> None:
        path, headers, body = requests[index]
        gate.wait()
        try:
            connections[index].request("POST", path, body=body, headers=headers)
            response = connections[index].getresponse()
            answers[index] = (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        except BaseException as error:
            answers[index] = error
        finally:
            connections[index].close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    for name, answer in zip(names, answers, strict=True):
        assert isinstance(answer, tuple), f"{name}: no HTTP answer: {answer!r}"
        yield name, *answer


def test_burst_of_first_invokes(burst_server: Server) -> None:
    lam = burst_server.client()
    names = [unique("burst") for _ in range(FUNCTIONS)]
    for name in names:
        create_function(lam, name, TMP_PROBE, wait=False)
    wait_active(lam, names)

    started = time.monotonic()
    outcomes: dict[int, int] = {}
    for name, status, headers, body in burst(burst_server, names):
        outcomes[status] = outcomes.get(status, 0) + 1
        if status == 200:
            assert "x-amz-function-error" not in headers, body
            assert json.loads(body) == {"name": name, "tmp": "ext4"}
        else:
            assert status == 429, (name, status, headers, body)
            assert headers["x-amzn-errortype"].startswith("TooManyRequestsException"), headers
            assert json.loads(body)["Reason"] in THROTTLE_REASONS, body
            assert int(headers["retry-after"]) >= 1
    elapsed = time.monotonic() - started
    print(f"burst of {FUNCTIONS}: {outcomes} in {elapsed:.1f} s")
    assert outcomes.get(200, 0) > 0, outcomes
    assert "Traceback" not in burst_server.log()
    assert "using a tmpfs" not in burst_server.log()

    # Afterwards the host serves as before: a throttled function runs when invoked again.
    again = json.loads(lam.invoke(FunctionName=names[-1], Payload=b'{"x": 1}')["Payload"].read())
    assert again == {"x": 1, "tmp": "ext4"}
