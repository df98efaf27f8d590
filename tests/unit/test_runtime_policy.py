"""The runtime policy (`runtimes.policy`), the runtime version ARN, and the message key of
rest-json errors: pure functions, no server."""

from __future__ import annotations

import dataclasses
import json

import botocore.session
import pytest

from lambdahost import runtimes
from lambdahost.api.protocols.rest_json import error_response
from lambdahost.errors import InvalidParameterValue, LambdaError, ResourceNotFound
from lambdahost.runtimes import RUNTIMES, policy

MODEL = botocore.session.get_session().get_service_model("lambda")


def test_every_runtime_of_the_model_gets_one_answer() -> None:
    for runtime in policy.aws_runtimes():
        decision = policy.decide(runtime)
        assert (decision.served_by is None) == (decision.refusal is not None), runtime
    assert set(RUNTIMES) <= set(policy.aws_runtimes())
    assert set(policy.BLOCKED_ON_CREATE) <= set(policy.aws_runtimes())


def test_served_natively() -> None:
    for name in RUNTIMES:
        decision = policy.decide(name)
        assert decision.native and decision.note is None
        assert policy.served_by(name) == name


def test_blocked_runtimes_get_awss_message_with_the_newest_of_their_language() -> None:
    assert policy.decide("nodejs12.x").refusal == (
        "The runtime parameter of nodejs12.x is no longer supported for creating or updating "
        "AWS Lambda functions. We recommend you use the new runtime (nodejs24.x) while "
        "creating or updating functions."
    )
    assert "(provided.al2023)" in (policy.decide("go1.x").refusal or "")
    assert "(dotnet10)" in (policy.decide("dotnetcore2.1").refusal or "")


def test_languages_not_served_here_are_refused_naming_what_is() -> None:
    assert policy.decide("java21").refusal == (
        "The runtime parameter of java21 is not supported by lambdahost. Supported runtimes: "
        f"{', '.join(RUNTIMES)}."
    )


def test_nearest_newer_interpreter_stands_in_when_it_says_it_may(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No served runtime stands in for another today: python3.10 is refused.
    assert policy.decide("python3.10").served_by is None
    base = RUNTIMES["python3.11"]
    fake = {
        "python3.13": dataclasses.replace(base, name="python3.13", serves_older=True),
        "python3.14": dataclasses.replace(base, name="python3.14", serves_older=True),
    }
    monkeypatch.setattr(policy, "RUNTIMES", {**RUNTIMES, **fake})
    decision = policy.decide("python3.12")
    assert decision.served_by == "python3.13" and not decision.native
    assert decision.note == "python3.12 is served here by the python3.13 runtime."
    assert policy.decide("python3.10").served_by == "python3.13"  # 3.11 does not opt in
    assert policy.decide("python3.7").served_by is None  # AWS blocks it: still refused
    assert policy.decide("nodejs18.x").served_by is None  # another language


def test_language_and_version_of_identifiers() -> None:
    assert policy.language("dotnetcore3.1") == policy.language("dotnet8") == "dotnet"
    assert policy.version_of("python3.12") == (3, 12)
    assert policy.version_of("nodejs20.x") == (20,)
    assert policy.version_of("provided") == ()


def test_the_runtime_version_arn_is_the_init_start_one() -> None:
    from lambdahost.invoke.reports import init_start_line

    arn = policy.version_arn("python3.11", "eu-west-1")
    assert arn == runtimes.runtime_version_arn("python3.11", "eu-west-1")
    assert arn.startswith("arn:aws:lambda:eu-west-1::runtime:")

    class Spec:
        runtime, region = "python3.11", "eu-west-1"

    line = init_start_line(Spec())  # type: ignore[arg-type]
    assert line == f"INIT_START Runtime Version: python:3.11.v1\tRuntime Version ARN: {arn}\n"


@pytest.mark.parametrize(
    "error, key",
    [
        (ResourceNotFound("gone"), "Message"),
        (LambdaError("x", code="CodeSigningConfigNotFoundException", status=404), "Message"),
        (InvalidParameterValue("bad"), "message"),
        (LambdaError("x", code="PreconditionFailedException", status=412), "message"),
        (LambdaError("x", code="UnknownOperationException", status=404), "message"),
    ],
)
def test_the_message_key_comes_from_the_error_shape(error: LambdaError, key: str) -> None:
    body = json.loads(error_response(error, MODEL).body)
    assert body == {"Type": "User", key: error.message}
    assert json.loads(error_response(error).body)["message"] == error.message
