"""Asynchronous invokes: durable queue, retries, event age, destinations (logs as witness)."""

from __future__ import annotations

import json
import signal
import time

import pytest
from botocore.exceptions import ClientError
from helpers import create_function, make_zip, start_server, unique

RECORDER = make_zip(
    {
        "app.py": (
            "import json\n"
            "def handler(event, context):\n"
            "    print('RECORD ' + json.dumps(event, sort_keys=True))\n"
            "    if isinstance(event, dict) and event.get('fail'):\n"
            "        raise RuntimeError('asked to fail')\n"
            "    return {'ok': True, 'id': event.get('id') if isinstance(event, dict) else None}\n"
        )
    }
)


def records(logs, name: str) -> list[dict]:  # noqa: ANN001
    found = []
    kwargs = {"logGroupName": f"/aws/lambda/{name}", "filterPattern": "RECORD"}
    try:
        for page in logs.get_paginator("filter_log_events").paginate(**kwargs):
            for event in page["events"]:
                text = event["message"]
                found.append(json.loads(text[text.index("RECORD ") + 7 :]))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    return found


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.5):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="module")
def logs(server):  # noqa: ANN001, ANN201
    return server.client("logs")


def test_event_invoke_config_api(lam, raw_lam) -> None:
    name = unique("eic")
    target = unique("eic-target")
    create_function(lam, name, RECORDER)
    create_function(lam, target, RECORDER)
    target_arn = lam.get_function_configuration(FunctionName=target)["FunctionArn"]
    put = lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": target_arn}},
    )
    assert put["MaximumRetryAttempts"] == 1
    assert put["FunctionArn"].endswith(f"{name}:$LATEST")
    updated = lam.update_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=120
    )
    assert updated["MaximumRetryAttempts"] == 1 and updated["MaximumEventAgeInSeconds"] == 120
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["DestinationConfig"]["OnFailure"]["Destination"] == target_arn
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert len(listed) == 1
    with pytest.raises(ClientError) as exc:
        lam.put_function_event_invoke_config(
            FunctionName=name,
            DestinationConfig={
                "OnSuccess": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}
            },
        )
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "no SQS endpoint" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        raw_lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=5)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    lam.delete_function_event_invoke_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)


def test_dead_letter_without_endpoint_is_rejected(lam) -> None:
    with pytest.raises(ClientError) as exc:
        create_function(
            lam,
            unique("dlq"),
            RECORDER,
            wait=False,
            DeadLetterConfig={"TargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq"},
        )
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_async_invoke_runs_and_logs(lam, logs) -> None:
    name = unique("async")
    create_function(lam, name, RECORDER)
    response = lam.invoke(
        FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": "a1"})
    )
    assert response["StatusCode"] == 202
    assert wait_for(lambda: [r for r in records(logs, name) if r.get("id") == "a1"])
    legacy = lam.invoke_async(FunctionName=name, InvokeArgs=json.dumps({"id": "legacy"}))
    assert legacy["Status"] == 202
    assert wait_for(lambda: [r for r in records(logs, name) if r.get("id") == "legacy"])


def test_async_payload_limit(lam) -> None:
    name = unique("async-big")
    create_function(lam, name, RECORDER)
    with pytest.raises(ClientError) as exc:
        lam.invoke(
            FunctionName=name,
            InvocationType="Event",
            Payload=b'"' + b"x" * (1024 * 1024 + 10) + b'"',
        )
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_failure_destination_gets_the_exact_record(lam, logs) -> None:
    name, target = unique("fails"), unique("on-failure")
    create_function(lam, name, RECORDER)
    create_function(lam, target, RECORDER)
    target_arn = lam.get_function_configuration(FunctionName=target)["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": target_arn}},
    )
    response = lam.invoke(
        FunctionName=name, InvocationType="Event", Payload=json.dumps({"fail": True})
    )
    request_id = response["ResponseMetadata"]["RequestId"]
    delivered = wait_for(lambda: records(logs, target))
    assert len(delivered) == 1
    rec = delivered[0]
    assert rec["version"] == "1.0" and rec["timestamp"].endswith("Z")
    assert rec["requestContext"] == {
        "requestId": request_id,
        "functionArn": lam.get_function_configuration(FunctionName=name)["FunctionArn"]
        + ":$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 1,
    }
    assert rec["requestPayload"] == {"fail": True}
    assert rec["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert rec["responsePayload"]["errorMessage"] == "asked to fail"
    assert len(records(logs, name)) == 1  # no retries


def test_success_destination(lam, logs) -> None:
    name, target = unique("succeeds"), unique("on-success")
    create_function(lam, name, RECORDER)
    create_function(lam, target, RECORDER)
    target_arn = lam.get_function_configuration(FunctionName=target)["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": target_arn}}
    )
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": "s1"}))
    delivered = wait_for(lambda: records(logs, target))
    assert delivered[0]["requestContext"]["condition"] == "Success"
    assert delivered[0]["responsePayload"] == {"ok": True, "id": "s1"}
    assert "functionError" not in delivered[0]["responseContext"]


def test_retries_happen_the_configured_number_of_times(lam, logs) -> None:
    name = unique("retries")
    create_function(lam, name, RECORDER)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=2)
    lam.invoke(
        FunctionName=name, InvocationType="Event", Payload=json.dumps({"fail": True, "n": 1})
    )
    assert wait_for(lambda: len(records(logs, name)) >= 3, timeout=60)
    time.sleep(3)  # scaled delays are 0.6 s and 1.2 s: a fourth attempt would have come by now
    assert len(records(logs, name)) == 3


def test_over_age_event_goes_to_failure_handling(lam, logs) -> None:
    name, target = unique("aged"), unique("aged-target")
    create_function(lam, name, RECORDER)
    create_function(lam, target, RECORDER)
    target_arn = lam.get_function_configuration(FunctionName=target)["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumEventAgeInSeconds=60,  # 0.6 s at the test server's time scale
        DestinationConfig={"OnFailure": {"Destination": target_arn}},
    )
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)  # throttled
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": "old"}))
    delivered = wait_for(lambda: records(logs, target), timeout=60)
    assert delivered[0]["requestContext"]["condition"] == "EventAgeExceeded"
    assert delivered[0]["requestPayload"] == {"id": "old"}
    assert records(logs, name) == []


def test_accepted_events_survive_kill_9(tmp_path) -> None:  # noqa: ANN001
    srv = start_server(tmp_path / "data")
    name = unique("durable")
    try:
        lam = srv.client()
        create_function(lam, name, RECORDER)
        for i in range(200):
            response = lam.invoke(
                FunctionName=name, InvocationType="Event", Payload=json.dumps({"id": i})
            )
            assert response["StatusCode"] == 202
            if i == 120:
                time.sleep(0.2)
    finally:
        srv.kill(signal.SIGKILL)
    srv = start_server(tmp_path / "data")
    try:
        logs = srv.client("logs")

        def all_seen() -> set[int] | None:
            ids = {r["id"] for r in records(logs, name)}
            return ids if len(ids) >= 200 else None

        seen = wait_for(all_seen, timeout=180, interval=2)
        missing = sorted(set(range(200)) - {r["id"] for r in records(logs, name)})
        assert seen == set(range(200)), f"missing: {missing}"
    finally:
        srv.kill()
