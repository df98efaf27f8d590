"""Several accounts on one server: keys from `lambdahost credentials add`, resources per
account, cross-account calls as resource-based policies allow, STS per key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from helpers import REGION, Server, create_function, make_zip, start_server, unique

ACCOUNT_B = "000000000002"
ACCOUNT_C = "000000000003"
DEFAULT = "000000000000"


def add_key(server: Server, account: str) -> tuple[str, str]:
    """`lambdahost credentials add` on the running server's data dir; its export lines."""
    argv = [sys.executable, "-m", "lambdahost.cli.main", "credentials", "add"]
    argv += ["--account", account, "--data-dir", str(server.data_dir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", done.stdout, re.M))
    assert exports["AWS_DEFAULT_REGION"] == REGION
    return exports["AWS_ACCESS_KEY_ID"], exports["AWS_SECRET_ACCESS_KEY"]


def client(server: Server, key: tuple[str, str], service: str = "lambda"):  # noqa: ANN201
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120),
    )


@pytest.fixture(scope="module")
def key_b(server: Server) -> tuple[str, str]:
    return add_key(server, ACCOUNT_B)


@pytest.fixture(scope="module")
def lam_b(server: Server, key_b: tuple[str, str]):  # noqa: ANN201
    return client(server, key_b)


def denied(error: ClientError, action: str, resource: str, account: str = ACCOUNT_B) -> bool:
    response = error.response
    return (
        response["Error"]["Code"] == "AccessDeniedException"
        and response["ResponseMetadata"]["HTTPStatusCode"] == 403
        and response["Error"]["Message"]
        == f"User: arn:aws:iam::{account}:root is not authorized to perform: {action} on "
        f"resource: {resource} because no resource-based policy allows the {action} action"
    )


def test_cli_adds_and_lists_keys(server: Server, key_b: tuple[str, str]) -> None:
    argv = [sys.executable, "-m", "lambdahost.cli.main", "credentials", "list"]
    listed = subprocess.run(
        [*argv, "--data-dir", str(server.data_dir)], capture_output=True, text=True, check=True
    ).stdout
    assert f"{key_b[0]}\t{ACCOUNT_B}" in listed
    assert key_b[1] not in listed  # no secrets
    assert oct((server.data_dir / "credentials").stat().st_mode & 0o777) == "0o600"
    bad = subprocess.run(
        [*argv[:-1], "add", "--account", "12", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "12-digit" in bad.stderr


def test_sts_answers_each_keys_account(server: Server, key_b: tuple[str, str]) -> None:
    assert server.client("sts").get_caller_identity()["Account"] == DEFAULT
    identity = client(server, key_b, "sts").get_caller_identity()
    assert identity["Account"] == ACCOUNT_B
    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT_B}:root"


def test_a_key_added_while_the_server_runs_works_at_once(server: Server) -> None:
    key = add_key(server, ACCOUNT_C)
    assert client(server, key, "sts").get_caller_identity()["Account"] == ACCOUNT_C
    assert client(server, key).list_functions()["Functions"] == []


def test_sts_with_an_unknown_key_is_an_xml_invalid_client_token_id(server: Server) -> None:
    request = AWSRequest(
        "POST",
        server.url + "/",
        data=b"Action=GetCallerIdentity&Version=2011-06-15",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(Credentials("AKLHNOSUCHKEY0000000", "x" * 40), "sts", REGION).add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(
        prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(raw, timeout=30)
    assert caught.value.code == 403
    assert caught.value.headers["Content-Type"].startswith("text/xml")
    body = caught.value.read().decode()
    assert "<Code>InvalidClientTokenId</Code>" in body
    assert "<Message>The security token included in the request is invalid.</Message>" in body
    with pytest.raises(ClientError) as boto_caught:
        client(server, ("AKLHNOSUCHKEY0000000", "x" * 40), "sts").get_caller_identity()
    assert boto_caught.value.response["Error"]["Code"] == "InvalidClientTokenId"


def test_resources_are_per_account(lam, lam_b) -> None:  # noqa: ANN001
    name = unique("acct")
    mine = create_function(lam, name)
    theirs = create_function(
        lam_b, name, make_zip({"app.py": "def handler(e, c):\n    return 'b'\n"})
    )
    assert mine["FunctionArn"] == f"arn:aws:lambda:{REGION}:{DEFAULT}:function:{name}"
    assert theirs["FunctionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT_B}:function:{name}"
    listed_b = [f["FunctionName"] for f in lam_b.list_functions()["Functions"]]
    assert listed_b == [name]
    assert name in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert json.loads(lam_b.invoke(FunctionName=name)["Payload"].read()) == "b"
    out = lam.invoke(FunctionName=name, Payload=b'{"a": 1}')
    assert json.loads(out["Payload"].read()) == {"a": 1}
    # Each account's logs hold its own function's lines.
    assert log_text(lam_b, name).count("START RequestId") == 1
    assert log_text(lam, name).count("START RequestId") == 1
    assert lam_b.get_account_settings()["AccountUsage"]["FunctionCount"] == 1
    lam_b.delete_function(FunctionName=name)
    assert (
        lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"] == mine["FunctionArn"]
    )
    lam.delete_function(FunctionName=name)


def log_text(lam, name: str) -> str:  # noqa: ANN001
    """The lines of the function's log group in `lam`'s account, once there are some."""
    logs = client_like(lam, "logs")
    deadline = time.monotonic() + 15
    while True:
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except logs.exceptions.ResourceNotFoundException:
            events = []
        text = "".join(e["message"] for e in events)
        if "REPORT RequestId" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def client_like(lam, service: str):  # noqa: ANN001, ANN201
    """A client of `service` with `lam`'s endpoint and credentials."""
    creds = lam._request_signer._credentials
    return boto3.client(
        service,
        endpoint_url=lam.meta.endpoint_url,
        region_name=REGION,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
    )


def test_cross_account_invoke_needs_the_functions_policy(lam, lam_b) -> None:  # noqa: ANN001
    name = unique("shared")
    arn = create_function(lam, name)["FunctionArn"]
    with pytest.raises(ClientError) as caught:
        lam_b.invoke(FunctionName=arn, Payload=b"{}")
    assert denied(caught.value, "lambda:InvokeFunction", arn)
    with pytest.raises(ClientError) as caught:
        lam_b.get_function(FunctionName=arn)
    assert denied(caught.value, "lambda:GetFunction", arn)
    # A policy naming another account grants nothing to B.
    lam.add_permission(
        FunctionName=name,
        StatementId="c",
        Action="lambda:InvokeFunction",
        Principal=ACCOUNT_C,
    )
    with pytest.raises(ClientError) as caught:
        lam_b.invoke(FunctionName=arn, Payload=b"{}")
    assert denied(caught.value, "lambda:InvokeFunction", arn)
    lam.add_permission(
        FunctionName=name,
        StatementId="b",
        Action="lambda:InvokeFunction",
        Principal=f"arn:aws:iam::{ACCOUNT_B}:root",
    )
    out = lam_b.invoke(FunctionName=arn, Payload=b'{"from": "b"}')
    assert json.loads(out["Payload"].read()) == {"from": "b"}
    # Only the action granted: reading the function is still denied.
    with pytest.raises(ClientError) as caught:
        lam_b.get_function(FunctionName=arn)
    assert denied(caught.value, "lambda:GetFunction", arn)
    lam.add_permission(
        FunctionName=name, StatementId="get", Action="lambda:GetFunction", Principal=ACCOUNT_B
    )
    assert lam_b.get_function(FunctionName=arn)["Configuration"]["FunctionArn"] == arn
    # An unknown account's function: denied alike, nothing revealed.
    ghost = f"arn:aws:lambda:{REGION}:000000000999:function:{name}"
    with pytest.raises(ClientError) as caught:
        lam_b.invoke(FunctionName=ghost)
    assert denied(caught.value, "lambda:InvokeFunction", ghost)
    lam.delete_function(FunctionName=name)


def test_cross_account_layer_needs_the_layers_policy(lam, lam_b) -> None:  # noqa: ANN001
    name = unique("shlayer")
    layer = lam.publish_layer_version(
        LayerName=name, Content={"ZipFile": make_zip({"python/shared_mod.py": "WHO = 'a'\n"})}
    )
    arn = layer["LayerVersionArn"]
    assert f":{DEFAULT}:layer:{name}:1" in arn
    fn = unique("uses")
    code = make_zip(
        {"app.py": "import shared_mod\ndef handler(e, c):\n    return shared_mod.WHO\n"}
    )
    with pytest.raises(ClientError) as caught:
        create_function(lam_b, fn, code, Layers=[arn])
    assert denied(caught.value, "lambda:GetLayerVersion", arn)
    with pytest.raises(ClientError) as caught:
        lam_b.get_layer_version_by_arn(Arn=arn)
    assert denied(caught.value, "lambda:GetLayerVersion", arn)
    lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId="b",
        Action="lambda:GetLayerVersion",
        Principal=ACCOUNT_B,
    )
    assert lam_b.get_layer_version_by_arn(Arn=arn)["LayerVersionArn"] == arn
    config = create_function(lam_b, fn, code, Layers=[arn])
    assert config["Layers"][0]["Arn"] == arn
    assert json.loads(lam_b.invoke(FunctionName=fn)["Payload"].read()) == "a"
    # The layer stays A's: B cannot change its policy.
    with pytest.raises(ClientError) as caught:
        lam_b.remove_layer_version_permission(
            LayerName=arn[: arn.rindex(":")], VersionNumber=1, StatementId="b"
        )
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    lam_b.delete_function(FunctionName=fn)


def test_an_accounts_resources_survive_a_restart_and_run_async(tmp_path) -> None:  # noqa: ANN001
    server = start_server(tmp_path / "data")
    try:
        key = add_key(server, ACCOUNT_B)
        lam_b = client(server, key)
        name = unique("kept")
        create_function(lam_b, name)
        assert lam_b.invoke(FunctionName=name, InvocationType="Event")["StatusCode"] == 202
        assert "REPORT RequestId" in log_text(lam_b, name)  # run by B's own queue
    finally:
        server.kill()
    server = start_server(tmp_path / "data")
    try:
        lam_b = client(server, key)
        assert [f["FunctionName"] for f in lam_b.list_functions()["Functions"]] == [name]
        assert server.client().list_functions()["Functions"] == []
        out = lam_b.invoke(FunctionName=name, Payload=b'{"again": true}')
        assert json.loads(out["Payload"].read()) == {"again": True}
    finally:
        server.kill()


def test_urls_of_a_deleted_alias_are_refused_with_several_accounts(
    server: Server,
    lam,  # noqa: ANN001
    lam_b,  # noqa: ANN001
) -> None:
    """Finding which account owns a URL must not trip over a URL whose alias is gone: it
    answers 403 Forbidden, as with one account, never a 500."""
    name = unique("urlgone")
    create_function(lam_b, name)
    lam_b.publish_version(FunctionName=name)
    lam_b.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    config = lam_b.create_function_url_config(FunctionName=name, AuthType="NONE", Qualifier="live")
    url_id = re.match(r"https?://([a-z0-9]{32})\.", config["FunctionUrl"])[1]  # type: ignore[index]
    lam_b.delete_alias(FunctionName=name, Name="live")
    lam.list_functions()  # the default account is open too
    request = urllib.request.Request(f"{server.url}/_lambdahost/url/{url_id}/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    assert refused.value.headers["x-amzn-errortype"] == "AccessDeniedException"
