"""SigV4 is checked on every API request."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request

import boto3
import botocore.auth
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import ACCESS_KEY, REGION, SECRET_KEY, start_server


def client(server, key: str = ACCESS_KEY, secret: str = SECRET_KEY):  # noqa: ANN001, ANN201
    return boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def rejected(call) -> tuple[int, str, str]:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        call()
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], str(exc.value)


def test_wrong_secret(server) -> None:
    code = rejected(lambda: client(server, secret="wrong" * 8).list_functions())
    assert code[:2] == (403, "InvalidSignatureException")


def test_unknown_access_key(server) -> None:
    code = rejected(lambda: client(server, key="AKIAUNKNOWN000000000").list_functions())
    assert code[:2] == (403, "UnrecognizedClientException")


def test_unsigned_request(server) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{server.url}/2015-03-31/functions/")
    assert exc.value.code == 403
    assert exc.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert "message" in json.loads(exc.value.read())


def test_skewed_clock(server, monkeypatch: pytest.MonkeyPatch) -> None:
    skewed = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
        minutes=20
    )
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: skewed)
    status, code, message = rejected(lambda: client(server).list_functions())
    assert (status, code) == (403, "InvalidSignatureException")
    assert "Signature expired" in message


def test_signature_never_echoed(server) -> None:
    _, _, message = rejected(lambda: client(server, secret="wrong" * 8).list_functions())
    assert "Canonical" not in message and "AWS4" not in message


def test_no_auth_mode_accepts_unsigned(tmp_path) -> None:  # noqa: ANN001
    srv = start_server(tmp_path / "data", "--no-auth")
    try:
        with urllib.request.urlopen(f"{srv.url}/2015-03-31/functions/") as response:
            assert json.loads(response.read())["Functions"] == []
        assert "authentication is OFF" in srv.log()
    finally:
        srv.kill()
