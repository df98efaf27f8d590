"""FunctionService on a temporary SQLite: create, read, update, delete, the state machine,
tags, listing; the error each wrong call gets (code and HTTP status as the API renders them)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from helpers import ROLE, make_zip
from lambda_services import Lambda, open_services

from lambdahost.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
)

ZIP = make_zip({"app.py": "def handler(event, context):\n    return event\n"})
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def params(name: str, zip_bytes: bytes = ZIP, **extra: object) -> dict:
    return {
        "FunctionName": name,
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_bytes},
        **extra,
    }


def test_create_is_pending_then_active(services: Lambda) -> None:
    config = services.functions.create(params("fn", Timeout=7))
    assert config["FunctionArn"] == ARN + "fn"
    assert config["State"] == "Pending" and config["StateReasonCode"] == "Creating"
    assert config["Timeout"] == 7 and config["MemorySize"] == 128  # given, and AWS's default
    digest = hashlib.sha256(ZIP).digest()
    assert config["CodeSha256"] == base64.b64encode(digest).decode()
    assert config["CodeSize"] == len(ZIP)
    assert config["LoggingConfig"]["LogGroup"] == "/aws/lambda/fn"
    services.settle()
    version = services.functions.get("fn")
    assert version.config["State"] == "Active"
    assert version.config["LastUpdateStatus"] == "Successful"
    assert "StateReason" not in version.config
    assert (version.code_dir / "app.py").read_text().startswith("def handler")


def test_get_by_arn_and_partial_arn(services: Lambda) -> None:
    services.functions.create(params("named"))
    for identifier in ("named", ARN + "named", "000000000000:function:named"):
        assert services.functions.get(identifier).config["FunctionName"] == "named"


def test_create_twice_is_a_conflict(services: Lambda) -> None:
    services.functions.create(params("twice"))
    with pytest.raises(ResourceConflict) as caught:
        services.functions.create(params("twice"))
    assert caught.value.status == 409 and caught.value.code == "ResourceConflictException"


@pytest.mark.parametrize(
    "change",
    [
        {"FunctionName": "fn:1"},  # a qualifier on create
        {"Runtime": None},
        {"Handler": None},
        {"Code": {}},
        {"Code": {"S3Bucket": "b", "S3Key": "k"}},
        {"Code": {"ZipFile": b"not a zip at all"}},
        {"Runtime": "cobol85"},
        {"MemorySize": 64},
        {"Timeout": 901},
    ],
    ids=lambda change: ",".join(f"{k}={v!r}"[:30] for k, v in change.items()),
)
def test_create_refuses_bad_parameters(services: Lambda, change: dict) -> None:
    with pytest.raises(InvalidParameterValue) as caught:
        services.functions.create({**params("bad"), **change})
    assert caught.value.status == 400
    with pytest.raises(ResourceNotFound):
        services.functions.get("bad")  # nothing half-created


def test_missing_function_is_404_with_its_arn(services: Lambda) -> None:
    with pytest.raises(ResourceNotFound) as caught:
        services.functions.get("ghost")
    assert caught.value.status == 404
    assert caught.value.message == f"Function not found: {ARN}ghost"
    services.functions.create(params("real"))
    with pytest.raises(ResourceNotFound, match=f"{ARN}real:7"):
        services.functions.get("real", "7")


def test_no_update_while_pending(services: Lambda) -> None:
    services.functions.create(params("busy"))
    with pytest.raises(ResourceConflict, match="Pending"):
        services.functions.update_configuration({"FunctionName": "busy", "Timeout": 9})


def test_update_configuration_goes_in_progress_then_successful(services: Lambda) -> None:
    created = services.functions.create(params("cfg"))
    services.settle()
    updated = services.functions.update_configuration(
        {"FunctionName": "cfg", "Timeout": 9, "Environment": {"Variables": {"A": "1"}}}
    )
    assert updated["LastUpdateStatus"] == "InProgress"
    assert updated["RevisionId"] != created["RevisionId"]
    with pytest.raises(ResourceConflict, match="update is in progress"):
        services.functions.update_configuration({"FunctionName": "cfg", "Timeout": 10})
    services.settle()
    config = services.functions.get("cfg").config
    assert config["Timeout"] == 9 and config["Environment"] == {"Variables": {"A": "1"}}
    assert config["LastUpdateStatus"] == "Successful"
    assert services.changed == ["cfg"]  # listeners (URLs, permissions, the pool) heard of it


def test_update_with_a_stale_revision_fails_the_precondition(services: Lambda) -> None:
    created = services.functions.create(params("rev"))
    services.settle()
    services.functions.update_configuration({"FunctionName": "rev", "Timeout": 5})
    services.settle()
    with pytest.raises(PreconditionFailed) as caught:
        services.functions.update_configuration(
            {"FunctionName": "rev", "Timeout": 6, "RevisionId": created["RevisionId"]}
        )
    assert caught.value.status == 412


def test_update_code_changes_the_code(services: Lambda) -> None:
    services.functions.create(params("code"))
    services.settle()
    new_zip = make_zip({"app.py": "def handler(event, context):\n    return 2\n"})
    dry = services.functions.update_code(
        {"FunctionName": "code", "ZipFile": new_zip, "DryRun": True}
    )
    assert dry["CodeSize"] == len(new_zip)
    assert services.functions.get("code").config["CodeSize"] == len(ZIP)  # dry run: unchanged
    services.functions.update_code({"FunctionName": "code", "ZipFile": new_zip})
    services.settle()
    version = services.functions.get("code")
    assert version.config["CodeSize"] == len(new_zip)
    assert "return 2" in (version.code_dir / "app.py").read_text()
    with pytest.raises(InvalidParameterValue):
        services.functions.update_code({"FunctionName": "code:1", "ZipFile": new_zip})


def test_delete(services: Lambda) -> None:
    services.functions.create(params("gone"))
    with pytest.raises(InvalidParameterValue, match=r"\$LATEST"):
        services.functions.delete("gone", "$LATEST")
    services.functions.delete("gone", "3")  # a missing version: nothing to do, as AWS
    services.functions.delete("gone")
    assert services.changed == ["gone"]
    with pytest.raises(ResourceNotFound):
        services.functions.get("gone")
    with pytest.raises(ResourceNotFound):
        services.functions.delete("gone")
    services.settle()  # the transition scheduled at create finds nothing to do


def test_list_pages_by_name(services: Lambda) -> None:
    for name in ("c", "a", "b"):
        services.functions.create(params(name))
    first = services.functions.list(None, 2)
    assert [f["FunctionName"] for f in first["Functions"]] == ["a", "b"]
    second = services.functions.list(first["NextMarker"], 2)
    assert [f["FunctionName"] for f in second["Functions"]] == ["c"]
    assert "NextMarker" not in second
    with pytest.raises(InvalidParameterValue, match="Invalid marker"):
        services.functions.list("garbage!", 2)


def test_tags_need_an_unqualified_arn(services: Lambda) -> None:
    services.functions.create(params("tagged", Tags={"team": "a"}))
    arn = ARN + "tagged"
    services.functions.tag(arn, {"env": "dev"})
    services.functions.untag(arn, ["team"])
    assert services.functions.tags_of(arn) == {"env": "dev"}
    with pytest.raises(InvalidParameterValue, match="Invalid ARN"):
        services.functions.tags_of("tagged")
    with pytest.raises(
        InvalidParameterValue, match="Tags on function aliases and versions are not supported"
    ):
        services.functions.tag(arn + ":1", {"x": "y"})
    with pytest.raises(ResourceNotFound):
        services.functions.tags_of(ARN + "nobody")


def test_transitions_left_by_a_killed_server_are_finished_at_start(services: Lambda) -> None:
    services.functions.create(params("left"))  # Pending, and the server dies before it settles
    services.scheduled.clear()
    again = open_services(services.functions.settings.data_dir)  # the next server start
    try:
        assert again.functions.states.settle_unfinished() == 1
        assert again.functions.get("left").config["State"] == "Active"
        assert again.functions.states.settle_unfinished() == 0
    finally:
        again.db.close()
