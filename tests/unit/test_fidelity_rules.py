"""The pure rules behind issue 12's items 8 and 9 (the e2e tests, with their sources, are in
tests/e2e/test_fidelity_validations.py)."""

from __future__ import annotations

import pytest

from lambdahost.control.lambda_.functions import listed_configuration, logging_config
from lambdahost.control.lambda_.permissions import _principal
from lambdahost.control.lambda_.rules import check_layer_versions, check_tag_count
from lambdahost.errors import InvalidParameterValue

LAYER = "arn:aws:lambda:us-east-1:000000000000:layer:"


def test_one_version_of_each_layer() -> None:
    check_layer_versions([f"{LAYER}a:1", f"{LAYER}b:1", f"{LAYER}ab:2"])
    with pytest.raises(InvalidParameterValue) as exc:
        check_layer_versions([f"{LAYER}a:1", f"{LAYER}b:1", f"{LAYER}a:3", f"{LAYER}b:2"])
    assert exc.value.message == (
        "Two different versions of the same layer are not allowed to be referenced in the same "
        f"function. {LAYER}a:1 and {LAYER}a:3 are versions of the same layer."
    )


def test_fifty_tags() -> None:
    check_tag_count({str(k): "" for k in range(50)})
    with pytest.raises(InvalidParameterValue, match="^Number of tags exceeds resource tag limit"):
        check_tag_count({str(k): "" for k in range(51)})


@pytest.mark.parametrize(
    "asked, answered",
    [
        (None, {"LogFormat": "Text", "LogGroup": "/aws/lambda/f"}),
        ({"LogGroup": "g"}, {"LogFormat": "Text", "LogGroup": "g"}),
        (
            {"LogFormat": "JSON"},
            {
                "LogFormat": "JSON",
                "LogGroup": "/aws/lambda/f",
                "ApplicationLogLevel": "INFO",
                "SystemLogLevel": "INFO",
            },
        ),
        (
            {"LogFormat": "JSON", "SystemLogLevel": "WARN"},
            {
                "LogFormat": "JSON",
                "LogGroup": "/aws/lambda/f",
                "ApplicationLogLevel": "INFO",
                "SystemLogLevel": "WARN",
            },
        ),
    ],
)
def test_logging_config_defaults(asked: dict | None, answered: dict) -> None:
    assert logging_config("f", asked) == answered


def test_listed_configuration() -> None:
    latest = {
        "FunctionName": "f",
        "FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:f",
        "Version": "$LATEST",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "RuntimeVersionConfig": {"RuntimeVersionArn": "x"},
        "Timeout": 3,
    }
    assert listed_configuration(latest, qualified=True) == {
        "FunctionName": "f",
        "FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
        "Version": "$LATEST",
        "Timeout": 3,
    }
    assert listed_configuration(latest, qualified=False)["FunctionArn"] == latest["FunctionArn"]
    assert "State" in latest  # the stored document is left alone


@pytest.mark.parametrize(
    "principal, statement",
    [
        ("*", "*"),
        ("111122223333", {"AWS": "arn:aws:iam::111122223333:root"}),
        ("arn:aws:iam::111122223333:role/r", {"AWS": "arn:aws:iam::111122223333:role/r"}),
        ("events.amazonaws.com", {"Service": "events.amazonaws.com"}),
        ("alexa-appkit.amazon.com", {"Service": "alexa-appkit.amazon.com"}),
    ],
)
def test_valid_principals(principal: str, statement: object) -> None:
    assert _principal(principal) == statement


@pytest.mark.parametrize(
    "principal", ["invalid.nonaws.com", "example.com", "1234", "arn:aws:s3:::bucket", "user"]
)
def test_invalid_principals(principal: str) -> None:
    with pytest.raises(InvalidParameterValue) as exc:
        _principal(principal)
    assert exc.value.message == (
        "The provided principal was invalid. Please check the principal and try again."
    )
