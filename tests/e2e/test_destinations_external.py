"""SQS destinations and dead-letter queues, delivered to a real SQS-compatible endpoint
(moto's server, started here on loopback)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from helpers import create_function, free_port, make_zip, start_server, unique

FAILING = make_zip({"app.py": "def handler(event, context):\n    raise ValueError('nope')\n"})
OK = make_zip({"app.py": "def handler(event, context):\n    return {'fine': event}\n"})


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    moto = Path(sys.executable).parent / "moto_server"
    if not moto.exists():
        pytest.skip("moto_server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait(10)


@pytest.fixture(scope="module")
def server_with_sqs(tmp_path_factory: pytest.TempPathFactory, sqs_endpoint: str):  # noqa: ANN201
    env = {"LAMBDAHOST_SQS_ENDPOINT": sqs_endpoint, "LAMBDAHOST_SNS_ENDPOINT": sqs_endpoint}
    srv = start_server(tmp_path_factory.mktemp("sqs") / "data", env=env)
    yield srv
    srv.kill()


def queue(sqs_endpoint: str, name: str) -> tuple[object, str, str]:
    sqs = boto3.client(
        "sqs",
        endpoint_url=sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return sqs, url, arn


def receive(sqs, url: str, timeout: float = 60) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if messages:
            return messages
        time.sleep(0.5)
    return []


def test_on_failure_to_sqs(server_with_sqs, sqs_endpoint: str) -> None:
    lam = server_with_sqs.client()
    sqs, url, arn = queue(sqs_endpoint, unique("failures"))
    name = unique("to-sqs")
    create_function(lam, name, FAILING)
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": arn}},
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"k": 1}))
    messages = receive(sqs, url)
    assert len(messages) == 1
    record = json.loads(messages[0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"] == {"k": 1}
    assert record["responsePayload"]["errorMessage"] == "nope"


def test_on_success_to_sqs(server_with_sqs, sqs_endpoint: str) -> None:
    lam = server_with_sqs.client()
    sqs, url, arn = queue(sqs_endpoint, unique("successes"))
    name = unique("ok-to-sqs")
    create_function(lam, name, OK)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn}}
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"k": 2}))
    record = json.loads(receive(sqs, url)[0]["Body"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"] == {"fine": {"k": 2}}


def test_dead_letter_queue(server_with_sqs, sqs_endpoint: str) -> None:
    lam = server_with_sqs.client()
    sqs, url, arn = queue(sqs_endpoint, unique("dlq"))
    name = unique("with-dlq")
    create_function(lam, name, FAILING, DeadLetterConfig={"TargetArn": arn})
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"d": 3}))
    messages = receive(sqs, url)
    assert json.loads(messages[0]["Body"]) == {"d": 3}
    attributes = messages[0]["MessageAttributes"]
    assert attributes["RequestID"]["StringValue"] == response["ResponseMetadata"]["RequestId"]
    assert "nope" in attributes["ErrorMessage"]["StringValue"]
