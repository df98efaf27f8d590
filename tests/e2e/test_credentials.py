"""Temporary credentials: STS AssumeRole, the execution role's credentials in a function's
environment, and how expired, forged and revoked session tokens are refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError
from helpers import REGION, ROLE, Server, create_function, make_zip, start_server, unique

ACCOUNT = "000000000000"
ROLE_NAME = ROLE.rsplit("/", 1)[1]
# Returns the AWS_* variables it sees, and an id that is new in every environment.
SHOW_ENV = make_zip(
    {
        "app.py": (
            "import os, uuid\n"
            "ENVIRONMENT = uuid.uuid4().hex\n"
            "def handler(event, context):\n"
            "    found = {k: v for k, v in os.environ.items() if k.startswith('AWS_')}\n"
            "    return {**found, 'environment': ENVIRONMENT}\n"
        )
    }
)


def role(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def session_client(server: Server, creds: dict[str, str], service: str = "lambda"):  # noqa: ANN201
    """A client signing with temporary credentials (AssumeRole's `Credentials` member, or a
    function's AWS_* variables)."""
    key = creds.get("AccessKeyId") or creds["AWS_ACCESS_KEY_ID"]
    secret = creds.get("SecretAccessKey") or creds["AWS_SECRET_ACCESS_KEY"]
    token = creds.get("SessionToken") or creds["AWS_SESSION_TOKEN"]
    return server.client(service, (key, secret, token), parameter_validation=False)


def refused(call) -> tuple[int, str, str]:  # noqa: ANN001
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def invoke(lam, name: str) -> dict[str, str]:  # noqa: ANN001
    response = lam.invoke(FunctionName=name)
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def revoke_sessions(server: Server, role_arn: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lambdahost.cli.main", "credentials", "revoke-sessions"]
    argv += ["--role-arn", role_arn, "--data-dir", str(server.data_dir)]
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps its error box at the terminal width
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def sts(server: Server):  # noqa: ANN201
    return server.client("sts", parameter_validation=False)


def assume(sts, role_arn: str, session: str = "alice", **extra: object) -> dict:  # noqa: ANN001
    return sts.assume_role(RoleArn=role_arn, RoleSessionName=session, **extra)


# -- AssumeRole -------------------------------------------------------------------------------


def test_assume_role_gives_credentials_that_work(server: Server, sts) -> None:  # noqa: ANN001
    before = time.time()
    out = assume(sts, role("path/to/deployer"), "alice@example.com")
    creds = out["Credentials"]
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", creds["AccessKeyId"])
    assert len(creds["SecretAccessKey"]) == 40 and creds["SessionToken"]
    # DurationSeconds defaults to an hour.
    assert abs(creds["Expiration"].timestamp() - (before + 3600)) < 60
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/alice@example.com"  # no role path
    user = out["AssumedRoleUser"]
    assert user["Arn"] == arn
    assert re.fullmatch(r"AROA[A-Z0-9]{17}:alice@example\.com", user["AssumedRoleId"])
    assert "PackedPolicySize" not in out

    identity = session_client(server, creds, "sts").get_caller_identity()
    assert (identity["Arn"], identity["UserId"], identity["Account"]) == (
        arn,
        user["AssumedRoleId"],
        ACCOUNT,
    )
    lam = session_client(server, creds)
    name = unique("by-role")
    create_function(lam, name)
    assert name in [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert session_client(server, creds, "logs").describe_log_groups()["logGroups"] is not None

    # A presigned URL carries the token in its query (X-Amz-Security-Token).
    url = lam.generate_presigned_url("get_function", Params={"FunctionName": name})
    assert "X-Amz-Security-Token=" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert json.loads(response.read())["Configuration"]["FunctionName"] == name


def test_assume_role_durations(server: Server, sts) -> None:  # noqa: ANN001
    before = time.time()
    creds = assume(sts, role("long"), DurationSeconds=43_200)["Credentials"]
    assert abs(creds["Expiration"].timestamp() - (before + 43_200)) < 60
    assert assume(sts, role("short"), DurationSeconds=900)["Credentials"]
    bounds = {899: "greater than or equal to 900", 43_201: "less than or equal to 43200"}
    for duration, bound in bounds.items():
        status, code, message = refused(
            lambda d=duration: assume(sts, role("x"), DurationSeconds=d)
        )
        assert (status, code) == (400, "ValidationError")
        assert message == (
            f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to "
            f"satisfy constraint: Member must have value {bound}"
        )
    # Role chaining (a role session assuming a role) is limited to an hour, as in AWS.
    chained = session_client(server, creds, "sts")
    assert chained.assume_role(RoleArn=role("next"), RoleSessionName="hop", DurationSeconds=3600)
    status, code, message = refused(
        lambda: chained.assume_role(
            RoleArn=role("next"), RoleSessionName="hop", DurationSeconds=3601
        )
    )
    assert (status, code) == (400, "ValidationError")
    assert message == (
        "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
        "role chaining."
    )


def test_assume_role_refusals(sts) -> None:  # noqa: ANN001
    status, code, message = refused(lambda: assume(sts, role("x"), "has space"))
    assert (status, code) == (400, "ValidationError")
    assert message == (
        "1 validation error detected: Value 'has space' at 'roleSessionName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
    )
    assert refused(lambda: assume(sts, "not-an-arn-at-all-really"))[:2] == (400, "ValidationError")
    # No trust policy could let a caller into another account's role, or "assume" a user.
    for target in (role("x", "000000000009"), f"arn:aws:iam::{ACCOUNT}:user/bob"):
        assert refused(lambda t=target: assume(sts, t)) == (
            403,
            "AccessDenied",
            f"User: arn:aws:iam::{ACCOUNT}:root is not authorized to perform: sts:AssumeRole "
            f"on resource: {target}",
        )
    # A session policy could only narrow the session; unevaluated, it is refused, not ignored.
    status, code, _ = refused(lambda: assume(sts, role("x"), Policy='{"Statement": []}'))
    assert (status, code) == (501, "NotImplementedException")


# -- a function's execution role --------------------------------------------------------------


def test_a_function_gets_its_roles_credentials(server: Server, lam) -> None:  # noqa: ANN001
    name = unique("creds")
    create_function(lam, name, SHOW_ENV)
    seen = invoke(lam, name)
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", seen["AWS_ACCESS_KEY_ID"])
    assert seen["AWS_SECRET_ACCESS_KEY"] and seen["AWS_SESSION_TOKEN"]
    identity = session_client(server, seen, "sts").get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{name}"
    assert identity["UserId"].startswith("AROA") and identity["UserId"].endswith(f":{name}")
    # ... and may do what its account's root may (there is no IAM policy evaluation yet).
    as_function = session_client(server, seen)
    assert as_function.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name
    # A warm environment keeps its credentials; each environment has its own.
    again = invoke(lam, name)
    assert again["environment"] == seen["environment"]
    assert again["AWS_ACCESS_KEY_ID"] == seen["AWS_ACCESS_KEY_ID"]


def test_the_credential_variables_are_reserved(lam) -> None:  # noqa: ANN001
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        status, code, message = refused(
            lambda v=variable: create_function(
                lam, unique("reserved"), Environment={"Variables": {v: "mine"}}
            )
        )
        assert (status, code) == (400, "InvalidParameterValueException")
        assert message.endswith(f"Reserved keys used in this request: {variable}")


# -- refused tokens ---------------------------------------------------------------------------


def test_forged_and_mismatched_tokens_are_invalid(server: Server, sts) -> None:  # noqa: ANN001
    creds = assume(sts, role("forgery"))["Credentials"]
    token = creds["SessionToken"]
    middle = len(token) // 2
    forged = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    other = assume(sts, role("forgery"), "bob")["Credentials"]
    cases = {
        "tampered": {**creds, "SessionToken": forged},
        "another session's token": {**creds, "SessionToken": other["SessionToken"]},
        "not base64": {**creds, "SessionToken": "!!!"},
    }
    for case, bad in cases.items():
        assert refused(session_client(server, bad, "sts").get_caller_identity) == (
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ), case
        assert refused(session_client(server, bad).list_functions)[:2] == (
            403,
            "UnrecognizedClientException",
        ), case
    # A temporary key without its token, and a root key with a token, are invalid too.
    bare = boto3.client(
        "sts",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
    )
    assert refused(bare.get_caller_identity)[:2] == (403, "InvalidClientTokenId")
    # The right token with the wrong secret is a signature mismatch.
    wrong_secret = {**creds, "SecretAccessKey": "x" * 40}
    assert refused(session_client(server, wrong_secret, "sts").get_caller_identity)[:2] == (
        403,
        "SignatureDoesNotMatch",
    )


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose environments' credentials last 8 seconds."""
    data = tmp_path_factory.mktemp("short-credentials") / "data"
    server = start_server(data, "--credentials-lifetime", "8")
    yield server
    server.kill()


def test_expired_credentials_are_refused_and_environments_renewed(short_lived: Server) -> None:
    lam = short_lived.client("lambda")
    name = unique("expiring")
    create_function(lam, name, SHOW_ENV, Timeout=1)
    first = invoke(lam, name)
    returned = time.time()  # the credentials were issued before this, so expire before +8 s
    again = invoke(lam, name)
    assert again["environment"] == first["environment"]  # fresh enough: reused
    old = session_client(short_lived, first, "sts")
    assert old.get_caller_identity()["Arn"].endswith(f"/{name}")

    # 8 s lifetime, a margin of 0.8 s, a 1 s timeout: from 6.2 s after they were issued, the
    # environment would not finish a request in time, so a new one (new credentials) runs it.
    time.sleep(max(0.0, returned + 6.5 - time.time()))
    renewed = invoke(lam, name)
    assert renewed["environment"] != first["environment"]
    assert renewed["AWS_ACCESS_KEY_ID"] != first["AWS_ACCESS_KEY_ID"]

    time.sleep(max(0.0, returned + 8.3 - time.time()))
    expired = "The security token included in the request is expired"
    assert refused(old.get_caller_identity) == (403, "ExpiredToken", expired)
    assert refused(session_client(short_lived, first).list_functions) == (
        403,
        "ExpiredTokenException",
        expired,
    )
    assert refused(session_client(short_lived, first, "logs").describe_log_groups) == (
        400,
        "ExpiredTokenException",
        expired,
    )
    identity = session_client(short_lived, renewed, "sts").get_caller_identity()
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{name}"


def test_revoking_a_roles_sessions(server: Server, sts, lam) -> None:  # noqa: ANN001
    target = role(unique("revoked"))
    creds = assume(sts, target)["Credentials"]
    before = session_client(server, creds)
    name = unique("revoke")
    create_function(lam, name, SHOW_ENV, Role=target)
    in_function = session_client(server, invoke(lam, name))
    bystander = session_client(server, assume(sts, role(unique("bystander")))["Credentials"])
    assert before.list_functions() and in_function.list_functions()

    done = revoke_sessions(server, target)
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stderr
    deadline = time.monotonic() + 10  # the server reads revocations again every second
    while True:
        try:
            before.list_functions()
        except ClientError as error:
            response = error.response
            break
        assert time.monotonic() < deadline, "the revocation never took effect"
        time.sleep(0.2)
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/{target.rsplit('/', 1)[1]}/alice"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "AccessDeniedException"
    assert response["Error"]["Message"] == (
        f"User: {arn} is not authorized to perform: lambda:ListFunctions on resource: * "
        "with an explicit deny in an identity-based policy"
    )
    assert refused(in_function.list_functions)[:2] == (403, "AccessDeniedException")
    revoked_sts = session_client(server, creds, "sts")
    status, code, _ = refused(
        lambda: revoked_sts.assume_role(RoleArn=role("elsewhere"), RoleSessionName="escape")
    )
    assert (status, code) == (403, "AccessDenied")
    # GetCallerIdentity needs no permission: even a denied session may ask who it is (AWS).
    assert revoked_sts.get_caller_identity()["Arn"] == arn
    # Other roles' sessions, and sessions of the role issued afterwards, work.
    assert bystander.list_functions()
    time.sleep(0.01)
    assert session_client(server, assume(sts, target)["Credentials"]).list_functions()


def test_revoke_sessions_checks_its_role(server: Server) -> None:
    done = revoke_sessions(server, "arn:aws:iam::000000000000:user/bob")
    assert done.returncode != 0 and "not a role ARN" in done.stderr
    done = revoke_sessions(server, role("nobody", "000000000077"))
    assert done.returncode != 0 and "no access keys" in done.stderr


def test_data_dir_keeps_the_session_key_private(server: Server) -> None:
    key = Path(server.data_dir) / "sts.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32


def test_session_credentials_sign_function_url_requests(server: Server, sts, lam) -> None:  # noqa: ANN001
    name = unique("url")
    echo = "import json\ndef handler(event, context):\n    return event['requestContext']\n"
    create_function(lam, name, make_zip({"app.py": echo}))
    config = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    path = f"/_lambdahost/url/{config['FunctionUrl'].split('//')[1].split('.')[0]}/"
    target = role(unique("url-caller"))
    creds = assume(sts, target, "carol")["Credentials"]
    signing = BotoCredentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])

    def call() -> tuple[int, bytes]:
        request = AWSRequest("GET", server.url + path)
        SigV4Auth(signing, "lambda", REGION).add_auth(request)
        prepared = request.prepare()
        raw = urllib.request.Request(prepared.url, headers=dict(prepared.headers))
        try:
            with urllib.request.urlopen(raw, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    status, body = call()
    assert status == 200, body
    iam = json.loads(body)["authorizer"]["iam"]
    assert iam["userArn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{target.rsplit('/', 1)[1]}/carol"
    assert iam["accessKey"] == creds["AccessKeyId"] and iam["userId"].endswith(":carol")

    assert revoke_sessions(server, target).returncode == 0
    deadline = time.monotonic() + 10
    while (status := call()[0]) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 403
