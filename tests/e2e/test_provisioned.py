"""Provisioned concurrency: environments initialised ahead of time, kept at the count."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError
from helpers import create_function, make_zip, unique

SLOW_INIT = make_zip(
    {
        "app.py": (
            "import os, time\n"
            "time.sleep(1.5)\n"
            "def handler(event, context):\n"
            "    if event.get('crash'):\n"
            "        os._exit(1)\n"
            "    return os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n"
        )
    }
)


def wait_ready(lam, name: str, qualifier: str, timeout: float = 60) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        config = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if config["Status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            return config
        time.sleep(0.5)


@pytest.fixture(scope="module")
def provisioned(lam) -> str:
    name = unique("provisioned")
    create_function(lam, name, SLOW_INIT, Timeout=10, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
    )
    assert put["Status"] == "IN_PROGRESS"
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    return name


def test_becomes_ready_with_counts(lam, provisioned: str) -> None:
    config = wait_ready(lam, provisioned, "live")
    assert config["Status"] == "READY", config
    assert config["AllocatedProvisionedConcurrentExecutions"] == 2
    assert config["AvailableProvisionedConcurrentExecutions"] == 2
    listed = lam.list_provisioned_concurrency_configs(FunctionName=provisioned)
    assert [c["FunctionArn"].split(":")[-1] for c in listed["ProvisionedConcurrencyConfigs"]] == [
        "live"
    ]


def test_parallel_invokes_skip_init(lam, provisioned: str) -> None:
    wait_ready(lam, provisioned, "live")

    def call(_: int) -> tuple[float, str]:
        started = time.monotonic()
        response = lam.invoke(FunctionName=provisioned, Qualifier="live", Payload=b"{}")
        return time.monotonic() - started, json.loads(response["Payload"].read())

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(call, range(2)))
    assert [r[1] for r in results] == ["provisioned-concurrency"] * 2
    assert max(r[0] for r in results) < 1.0, results


def test_count_is_kept_up_when_an_environment_dies(lam, provisioned: str) -> None:
    wait_ready(lam, provisioned, "live")
    response = lam.invoke(FunctionName=provisioned, Qualifier="live", Payload=b'{"crash": true}')
    assert response["FunctionError"] == "Unhandled"
    time.sleep(1)
    config = wait_ready(lam, provisioned, "live")
    assert config["Status"] == "READY"
    assert config["AllocatedProvisionedConcurrentExecutions"] == 2


def test_rules_and_delete(lam, provisioned: str) -> None:
    with pytest.raises(ClientError) as exc:
        lam.put_provisioned_concurrency_config(
            FunctionName=provisioned, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_provisioned_concurrency_config(
            FunctionName=provisioned, Qualifier="99", ProvisionedConcurrentExecutions=1
        )
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=provisioned, Qualifier="1")
    lam.delete_provisioned_concurrency_config(FunctionName=provisioned, Qualifier="live")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=provisioned, Qualifier="live")


def test_init_failure_is_reported(lam) -> None:
    name = unique("provisioned-broken")
    create_function(lam, name, make_zip({"app.py": "raise RuntimeError('no')\n"}), Publish=True)
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    config = wait_ready(lam, name, "1")
    assert config["Status"] == "FAILED"
    assert config["StatusReason"]
