"""CloudWatch Logs subset and STS, against a real server, through boto3 and the AWS CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import ACCESS_KEY, REGION, SECRET_KEY, Server, create_function, make_zip, unique
from helpers import start_server as start

AWS = str(Path(sys.executable).parent / "aws")
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def logs(server: Server):  # noqa: ANN201 - a botocore client
    return server.client("logs")


def now_ms() -> int:
    return int(time.time() * 1000)


def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def make_stream(logs, group: str, stream: str, messages: list[str], start: int) -> None:  # noqa: ANN001
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    events = [{"timestamp": start + i, "message": m} for i, m in enumerate(messages)]
    response = logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    assert "rejectedLogEventsInfo" not in response


def aws(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return subprocess.run(
        [AWS, *args, "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# --- groups -----------------------------------------------------------------------------------


def test_log_groups_create_describe_paginate_delete(logs) -> None:  # noqa: ANN001
    base = f"/test/{unique('groups')}"
    names = [f"{base}/g{i}" for i in range(5)]
    for name in names:
        logs.create_log_group(logGroupName=name)
    assert error_code(lambda: logs.create_log_group(logGroupName=names[0])) == (
        "ResourceAlreadyExistsException"
    )

    first = logs.describe_log_groups(logGroupNamePrefix=base, limit=2)
    assert [g["logGroupName"] for g in first["logGroups"]] == names[:2]
    assert "nextToken" in first
    pages = logs.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix=base, PaginationConfig={"PageSize": 2}
    )
    found = [g["logGroupName"] for page in pages for g in page["logGroups"]]
    assert found == names
    group = logs.describe_log_groups(logGroupNamePrefix=names[3])["logGroups"][0]
    assert group["arn"].endswith(f":log-group:{names[3]}:*")
    assert group["creationTime"] > now_ms() - 600_000
    assert "retentionInDays" not in group
    # The prefix is case-sensitive and `_` is no wildcard (SQLite's LIKE would be both).
    assert logs.describe_log_groups(logGroupNamePrefix=base.upper())["logGroups"] == []
    pattern = base.split("/")[-1].upper()
    assert len(logs.describe_log_groups(logGroupNamePattern=pattern)["logGroups"]) == 5

    make_stream(logs, names[0], "s", ["doomed"], now_ms())
    logs.delete_log_group(logGroupName=names[0])
    assert error_code(lambda: logs.describe_log_streams(logGroupName=names[0])) == (
        "ResourceNotFoundException"
    )
    assert error_code(lambda: logs.delete_log_group(logGroupName=names[0])) == (
        "ResourceNotFoundException"
    )
    # Re-created, it starts empty: the events went with the group.
    logs.create_log_group(logGroupName=names[0])
    logs.create_log_stream(logGroupName=names[0], logStreamName="s")
    assert logs.get_log_events(logGroupName=names[0], logStreamName="s")["events"] == []


def test_invalid_names_and_unknown_operations(logs) -> None:  # noqa: ANN001
    assert error_code(lambda: logs.create_log_group(logGroupName="has space")) == (
        "InvalidParameterException"
    )
    code = error_code(lambda: logs.list_tags_for_resource(resourceArn="arn:aws:logs:x"))
    assert code == "NotImplementedException"


# --- streams ----------------------------------------------------------------------------------


def test_log_streams_order_and_paginate(logs) -> None:  # noqa: ANN001
    group = f"/test/{unique('streams')}"
    logs.create_log_group(logGroupName=group)
    start = now_ms() - 60_000
    # Names and last-event times in opposite orders, so the two orderings differ.
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        make_stream(logs, group, name, [f"event {name}"], start - i * 1000)
    assert (
        error_code(lambda: logs.create_log_stream(logGroupName=group, logStreamName="a"))
        == "ResourceAlreadyExistsException"
    )
    assert (
        error_code(lambda: logs.create_log_stream(logGroupName=f"{group}-nope", logStreamName="a"))
        == "ResourceNotFoundException"
    )

    def names(**kw: object) -> list[str]:
        pages = logs.get_paginator("describe_log_streams").paginate(
            logGroupName=group, PaginationConfig={"PageSize": 2}, **kw
        )
        return [s["logStreamName"] for page in pages for s in page["logStreams"]]

    assert names() == ["a", "b", "c", "d", "e"]
    assert names(descending=True) == ["e", "d", "c", "b", "a"]
    assert names(orderBy="LastEventTime") == ["e", "d", "c", "b", "a"]
    assert names(orderBy="LastEventTime", descending=True) == ["a", "b", "c", "d", "e"]
    assert names(logStreamNamePrefix="c") == ["c"]
    stream = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix="b")["logStreams"][0]
    assert stream["firstEventTimestamp"] == stream["lastEventTimestamp"] == start - 1000
    assert stream["lastIngestionTime"] >= stream["creationTime"]
    assert stream["arn"].endswith(f":log-group:{group}:log-stream:b")
    assert (
        error_code(
            lambda: logs.describe_log_streams(
                logGroupName=group, orderBy="LastEventTime", logStreamNamePrefix="a"
            )
        )
        == "InvalidParameterException"
    )


# --- events -----------------------------------------------------------------------------------


def test_get_log_events_tokens_follow_aws_semantics(logs) -> None:  # noqa: ANN001
    group = f"/test/{unique('get')}"
    start = now_ms() - 120_000
    messages = [f"line {i:02d}" for i in range(25)]
    make_stream(logs, group, "s", messages, start)

    tail = logs.get_log_events(logGroupName=group, logStreamName="s")
    assert [e["message"] for e in tail["events"]] == messages
    assert tail["nextForwardToken"].startswith("f/")
    assert tail["nextBackwardToken"].startswith("b/")
    assert {"timestamp", "message", "ingestionTime"} <= set(tail["events"][0])

    # Forward from the head, 10 at a time, until the same token comes back.
    seen: list[str] = []
    kwargs: dict[str, object] = {"startFromHead": True, "limit": 10}
    token = None
    pages = 0
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName="s", **kwargs)
        pages += 1
        seen += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            assert page["events"] == []
            break
        token = page["nextForwardToken"]
        kwargs = {"nextToken": token, "limit": 10}
    assert seen == messages
    assert pages == 4

    # Backward from the tail: the newest 10 first, then older pages, each oldest-first.
    page = logs.get_log_events(logGroupName=group, logStreamName="s", limit=10)
    assert [e["message"] for e in page["events"]] == messages[15:]
    older = logs.get_log_events(
        logGroupName=group, logStreamName="s", limit=10, nextToken=page["nextBackwardToken"]
    )
    assert [e["message"] for e in older["events"]] == messages[5:15]
    oldest = logs.get_log_events(
        logGroupName=group, logStreamName="s", limit=10, nextToken=older["nextBackwardToken"]
    )
    assert [e["message"] for e in oldest["events"]] == messages[:5]
    end = logs.get_log_events(
        logGroupName=group, logStreamName="s", limit=10, nextToken=oldest["nextBackwardToken"]
    )
    assert end["events"] == [] and end["nextBackwardToken"] == oldest["nextBackwardToken"]
    # New events show up behind the last forward token.
    logs.put_log_events(
        logGroupName=group,
        logStreamName="s",
        logEvents=[{"timestamp": start + 100, "message": "late"}],
    )
    later = logs.get_log_events(logGroupName=group, logStreamName="s", nextToken=token)
    assert [e["message"] for e in later["events"]] == ["late"]

    # startTime inclusive, endTime exclusive.
    window = logs.get_log_events(
        logGroupName=group, logStreamName="s", startTime=start + 3, endTime=start + 6
    )
    assert [e["message"] for e in window["events"]] == messages[3:6]
    assert (
        error_code(lambda: logs.get_log_events(logGroupName=group, logStreamName="nope"))
        == "ResourceNotFoundException"
    )
    assert (
        error_code(
            lambda: logs.get_log_events(logGroupName=group, logStreamName="s", nextToken="x/1")
        )
        == "InvalidParameterException"
    )


def test_filter_log_events_patterns_streams_and_pages(logs) -> None:  # noqa: ANN001
    group = f"/test/{unique('filter')}"
    start = now_ms() - 300_000
    make_stream(logs, group, "app-1", ["ERROR disk full", "INFO ok", "WARN slow disk"], start)
    make_stream(logs, group, "app-2", ["ERROR net down", "info lower", "Error mixed"], start + 10)
    make_stream(logs, group, "other", ["ERROR other stream"], start + 20)

    def messages(**kw: object) -> list[str]:
        events = logs.filter_log_events(logGroupName=group, **kw)["events"]
        return [e["message"] for e in events]

    # Interleaved by timestamp across streams.
    assert messages() == [
        "ERROR disk full",
        "INFO ok",
        "WARN slow disk",
        "ERROR net down",
        "info lower",
        "Error mixed",
        "ERROR other stream",
    ]
    assert messages(filterPattern="ERROR") == [
        "ERROR disk full",
        "ERROR net down",
        "ERROR other stream",
    ]
    assert messages(filterPattern="ERROR disk") == ["ERROR disk full"]
    assert messages(filterPattern='"slow disk"') == ["WARN slow disk"]
    assert messages(filterPattern='"disk slow"') == []
    assert messages(filterPattern="?WARN ?INFO") == ["INFO ok", "WARN slow disk"]
    assert messages(filterPattern="ERROR -disk -net") == ["ERROR other stream"]
    assert messages(logStreamNames=["app-2"]) == ["ERROR net down", "info lower", "Error mixed"]
    assert messages(logStreamNamePrefix="app-", filterPattern="ERROR") == [
        "ERROR disk full",
        "ERROR net down",
    ]
    assert messages(startTime=start + 10, endTime=start + 12) == ["ERROR net down", "info lower"]

    first = logs.filter_log_events(logGroupName=group)["events"]
    assert first[0]["logStreamName"] == "app-1"
    assert {"timestamp", "ingestionTime", "eventId"} <= set(first[0])
    again = logs.filter_log_events(logGroupName=group)["events"]
    assert [e["eventId"] for e in again] == [e["eventId"] for e in first]
    assert len({e["eventId"] for e in first}) == len(first)

    pages = list(
        logs.get_paginator("filter_log_events").paginate(
            logGroupName=group, PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["events"]) for p in pages] == [2, 2, 2, 1]
    assert [e["eventId"] for p in pages for e in p["events"]] == [e["eventId"] for e in first]
    filtered = logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, filterPattern="ERROR", PaginationConfig={"PageSize": 1}
    )
    assert [e["message"] for p in filtered for e in p["events"]] == [
        "ERROR disk full",
        "ERROR net down",
        "ERROR other stream",
    ]
    assert (
        error_code(
            lambda: logs.filter_log_events(logGroupName=group, filterPattern="{ $.level = 1 }")
        )
        == "InvalidParameterException"
    )
    assert (
        error_code(lambda: logs.filter_log_events(logGroupName=f"{group}-nope"))
        == "ResourceNotFoundException"
    )


def test_put_log_events_rejects_like_aws(logs) -> None:  # noqa: ANN001
    group = f"/test/{unique('put')}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    now = now_ms()
    old = logs.put_log_events(
        logGroupName=group,
        logStreamName="s",
        logEvents=[
            {"timestamp": now - 15 * DAY_MS, "message": "too old"},
            {"timestamp": now - 15 * DAY_MS + 1000, "message": "too old too"},
        ],
    )
    assert old["rejectedLogEventsInfo"] == {"tooOldLogEventEndIndex": 1}
    mixed = logs.put_log_events(
        logGroupName=group,
        logStreamName="s",
        logEvents=[
            {"timestamp": now, "message": "fine"},
            {"timestamp": now + 3 * 3600_000, "message": "too new"},
        ],
    )
    assert mixed["rejectedLogEventsInfo"] == {"tooNewLogEventStartIndex": 1}
    stored = logs.get_log_events(logGroupName=group, logStreamName="s")["events"]
    assert [e["message"] for e in stored] == ["fine"]
    assert (
        error_code(
            lambda: logs.put_log_events(
                logGroupName=group,
                logStreamName="s",
                logEvents=[
                    {"timestamp": now, "message": "b"},
                    {"timestamp": now - 1, "message": "a"},
                ],
            )
        )
        == "InvalidParameterException"
    )
    assert (
        error_code(
            lambda: logs.put_log_events(
                logGroupName=group,
                logStreamName="nope",
                logEvents=[{"timestamp": now, "message": "x"}],
            )
        )
        == "ResourceNotFoundException"
    )


# --- retention --------------------------------------------------------------------------------


def test_retention_policy_shape_and_values(logs) -> None:  # noqa: ANN001
    group = f"/test/{unique('retention')}"
    logs.create_log_group(logGroupName=group)
    assert (
        error_code(lambda: logs.put_retention_policy(logGroupName=group, retentionInDays=2))
        == "InvalidParameterException"
    )
    logs.put_retention_policy(logGroupName=group, retentionInDays=14)
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert described["retentionInDays"] == 14
    logs.delete_retention_policy(logGroupName=group)
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert "retentionInDays" not in described
    assert (
        error_code(
            lambda: logs.put_retention_policy(logGroupName=f"{group}-nope", retentionInDays=1)
        )
        == "ResourceNotFoundException"
    )


def test_retention_purge_and_restart(tmp_path: Path) -> None:
    srv = start(tmp_path / "data", env={"LAMBDAHOST_LOG_RETENTION_SWEEP_S": "0.5"})
    try:
        logs = srv.client("logs")
        now = now_ms()
        logs.create_log_group(logGroupName="/keep")
        logs.create_log_group(logGroupName="/short")
        for group in ("/keep", "/short"):
            for stream, stamp in (("old", now - 3 * DAY_MS), ("new", now)):
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
                logs.put_log_events(
                    logGroupName=group,
                    logStreamName=stream,
                    logEvents=[{"timestamp": stamp, "message": f"{stream} event"}],
                )
        logs.put_retention_policy(logGroupName="/short", retentionInDays=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            remaining = logs.filter_log_events(logGroupName="/short")["events"]
            if len(remaining) == 1:
                break
            time.sleep(0.2)
        assert [e["message"] for e in remaining] == ["new event"]
        streams = logs.describe_log_streams(logGroupName="/short")["logStreams"]
        assert [s["logStreamName"] for s in streams] == ["new"]
        assert len(logs.filter_log_events(logGroupName="/keep")["events"]) == 2
    finally:
        srv.kill()
    # Everything is in SQLite: a restarted server serves the same logs.
    srv = start(tmp_path / "data")
    try:
        logs = srv.client("logs")
        assert [e["message"] for e in logs.filter_log_events(logGroupName="/short")["events"]] == [
            "new event"
        ]
        assert (
            logs.describe_log_groups(logGroupNamePrefix="/short")["logGroups"][0]["retentionInDays"]
            == 1
        )
    finally:
        srv.kill()


# --- STS --------------------------------------------------------------------------------------


def test_sts_get_caller_identity(server: Server) -> None:
    identity = server.client("sts").get_caller_identity()
    assert identity["Account"] == "000000000000"
    assert identity["Arn"] == "arn:aws:iam::000000000000:root"
    assert identity["UserId"] == "000000000000"
    result = aws(server, "sts", "get-caller-identity")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Account"] == "000000000000"


def test_sts_operation_not_built_is_a_query_error(server: Server) -> None:
    sts = server.client("sts")
    with pytest.raises(ClientError) as info:
        sts.get_session_token()
    assert info.value.response["Error"]["Code"] == "NotImplementedException"
    assert "GetSessionToken" in info.value.response["Error"]["Message"]


# --- a real function's logs -------------------------------------------------------------------

PRINTING = make_zip(
    {"app.py": "def handler(event, context):\n    print('marker', event['n'])\n    return 1\n"}
)


@pytest.fixture(scope="module")
def printed(server: Server, lam) -> str:  # noqa: ANN001
    name = unique("printing")
    create_function(lam, name, PRINTING)
    for n in (1, 2):
        lam.invoke(FunctionName=name, Payload=json.dumps({"n": n}))
    return name


def wait_for_events(logs, group: str, count: int, **kw: object) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + 30
    events: list[dict] = []
    while time.monotonic() < deadline:
        try:
            events = logs.filter_log_events(logGroupName=group, **kw)["events"]
        except ClientError:
            events = []
        if len(events) >= count:
            return events
        time.sleep(0.2)
    return events


def test_filter_after_invoke_shows_lambda_lines(logs, printed: str) -> None:  # noqa: ANN001
    group = f"/aws/lambda/{printed}"
    events = wait_for_events(logs, group, 2, filterPattern="REPORT")
    text = [e["message"] for e in wait_for_events(logs, group, 8)]
    assert sum(m.startswith("START RequestId: ") for m in text) == 2
    assert sum(m.startswith("END RequestId: ") for m in text) == 2
    assert sum(m.startswith("REPORT RequestId: ") for m in text) == 2
    assert any("marker 1" in m for m in text) and any("marker 2" in m for m in text)
    assert "Billed Duration" in events[0]["message"]
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert streams and "[$LATEST]" in streams[0]["logStreamName"]
    markers = wait_for_events(logs, group, 2, filterPattern='"marker 2"')
    assert [m["message"].strip() for m in markers] == ["marker 2"]


def test_aws_cli_reads_function_logs(server: Server, printed: str) -> None:
    group = f"/aws/lambda/{printed}"
    wait_for_events(server.client("logs"), group, 8)
    result = aws(server, "logs", "filter-log-events", "--log-group-name", group)
    assert result.returncode == 0, result.stderr
    assert "marker 1" in result.stdout and "REPORT RequestId" in result.stdout
    groups = aws(server, "logs", "describe-log-groups", "--log-group-name-prefix", group)
    assert json.loads(groups.stdout)["logGroups"][0]["logGroupName"] == group


def test_aws_logs_tail(server: Server, printed: str) -> None:
    group = f"/aws/lambda/{printed}"
    wait_for_events(server.client("logs"), group, 8)
    # `aws logs tail` exists only in AWS CLI v2; run it when that is what's installed.
    tail = aws(server, "logs", "tail", group, "--since", "10m")
    if "Invalid choice" in tail.stderr or "invalid choice" in tail.stderr:
        pytest.skip("this AWS CLI (v1) has no `logs tail`; `lambdahost logs` makes its calls")
    assert tail.returncode == 0, tail.stderr
    assert "marker 1" in tail.stdout


def test_event_pages_stop_at_one_megabyte(logs) -> None:  # noqa: ANN001
    group = f"/test/{unique('big')}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s")
    start = now_ms() - 60_000
    for half in (0, 4):
        logs.put_log_events(
            logGroupName=group,
            logStreamName="s",
            logEvents=[
                {"timestamp": start + half + i, "message": f"{half + i}" + "x" * 200_000}
                for i in range(4)
            ],
        )
    first = logs.filter_log_events(logGroupName=group)
    assert len(first["events"]) == 5 and "nextToken" in first
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group)
    assert [e["message"][0] for p in pages for e in p["events"]] == list("01234567")
    head = logs.get_log_events(logGroupName=group, logStreamName="s", startFromHead=True)
    assert [e["message"][0] for e in head["events"]] == list("01234")
    tail = logs.get_log_events(logGroupName=group, logStreamName="s")
    assert [e["message"][0] for e in tail["events"]] == list("34567")
