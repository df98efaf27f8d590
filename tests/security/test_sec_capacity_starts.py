"""Cold starts beyond what the host starts at once wait in line, briefly; past the line's
length or its wait they are refused with AWS's throttle (429 TooManyRequestsException with a
Reason), never a 5xx (issue #22)."""

from __future__ import annotations

import json
import threading

import pytest
from botocore.exceptions import ClientError
from helpers import Server, create_function, make_zip, start_server, unique
from test_sec_capacity_budgets import no_retries

# Init is slow, so the one cold start allowed at a time keeps its slot (for a second at most).
SLOW_INIT = make_zip(
    {
        "app.py": (
            "import time\ntime.sleep(2)\ndef handler(event, context):\n    return {'ok': True}\n"
        )
    }
)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    flags = ["--cold-starts", "1", "--cold-start-queue", "1", "--cold-start-wait", "0.2"]
    srv = start_server(tmp_path_factory.mktemp("gated") / "data", *flags)
    yield srv
    srv.kill()


def test_cold_starts_past_the_line_are_throttled(gated: Server) -> None:
    lam = no_retries(gated)
    names = [unique("gate") for _ in range(3)]
    for name in names:
        create_function(lam, name, SLOW_INIT, Timeout=10)
    clients = [no_retries(gated) for _ in names]
    for client, name in zip(clients, names, strict=True):
        client.get_function_configuration(FunctionName=name)  # connect and load ahead of time
    outcomes: dict[str, object] = {}
    gate = threading.Barrier(len(names))

    def run(index: int) -> None:
        gate.wait()
        try:
            response = clients[index].invoke(FunctionName=names[index], Payload=b"{}")
            outcomes[names[index]] = json.loads(response["Payload"].read())
        except ClientError as error:
            outcomes[names[index]] = error.response

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # One starts; one waits in line and gives up after 0.2 s; one finds the line full.
    refused = [o for o in outcomes.values() if isinstance(o, dict) and "Error" in o]
    assert sorted(map(str, outcomes.values())).count(str({"ok": True})) == 1, outcomes
    assert len(refused) == 2, outcomes
    for response in refused:
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert response["Error"]["Code"] == "TooManyRequestsException"
        assert response["Reason"] == "ConcurrentInvocationLimitExceeded"

    # The line moves on: a refused function starts once the host has a slot for it.
    for name, outcome in outcomes.items():
        if outcome in refused:
            response = lam.invoke(FunctionName=name, Payload=b"{}")
            assert json.loads(response["Payload"].read()) == {"ok": True}
    assert "Traceback" not in gated.log()
