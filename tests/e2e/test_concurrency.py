"""Reserved concurrency: exact limits, the right throttling reason, slots always returned."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from helpers import create_function, make_zip, unique

SLEEPY = make_zip(
    {
        "app.py": (
            "import time\n"
            "def handler(event, context):\n"
            "    time.sleep(event.get('seconds', 0))\n"
            "    if event.get('fail'):\n"
            "        raise RuntimeError('boom')\n"
            "    return 'done'\n"
        )
    }
)


def attempt(lam, name: str, event: dict) -> tuple[int, str | None]:  # noqa: ANN001
    try:
        response = lam.invoke(FunctionName=name, Payload=json.dumps(event))
        response["Payload"].read()
        return 200, None
    except ClientError as exc:
        r = exc.response
        assert r["Error"]["Code"] == "TooManyRequestsException"
        assert r["ResponseMetadata"]["HTTPHeaders"].get("retry-after")
        return r["ResponseMetadata"]["HTTPStatusCode"], r.get("Reason")


def parallel(lam, name: str, event: dict, count: int) -> list[tuple[int, str | None]]:  # noqa: ANN001
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: attempt(lam, name, event), range(count)))


def test_reserved_concurrency_api(lam, raw_lam) -> None:
    name = unique("reserved-api")
    create_function(lam, name, SLEEPY)
    before = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    assert put["ReservedConcurrentExecutions"] == 7
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 7
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 7}
    after = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    assert after == before - 7
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=950)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)


def test_reserved_one_admits_exactly_one(lam) -> None:
    name = unique("reserved-one")
    create_function(lam, name, SLEEPY, Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    results = parallel(lam, name, {"seconds": 2}, 3)
    assert sorted(r[0] for r in results) == [200, 429, 429]
    reasons = {r[1] for r in results if r[0] == 429}
    assert reasons == {"ReservedFunctionConcurrentInvocationLimitExceeded"}


def test_reserved_zero_throttles_everything(lam) -> None:
    name = unique("reserved-zero")
    create_function(lam, name, SLEEPY)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert attempt(lam, name, {}) == (429, "ReservedFunctionConcurrentInvocationLimitExceeded")


def test_slots_are_given_back_after_errors_and_timeouts(lam) -> None:
    name = unique("reserved-back")
    create_function(lam, name, SLEEPY, Timeout=3)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    for event in ({"fail": True, "seconds": 2}, {"seconds": 10}, {"seconds": 2}):
        results = parallel(lam, name, event, 6)
        assert sum(1 for r in results if r[0] == 200) == 2, (event, results)
    # Everything returned: two fit again at once.
    assert [r[0] for r in parallel(lam, name, {}, 2)] == [200, 200]
