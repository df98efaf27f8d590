"""Role sessions: the sealed token format, its key file, AssumeRole's rules, the credentials
of function environments, who signed a request, revocation, and what it costs."""

from __future__ import annotations

import base64
import re
import stat
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from lambdahost.api.sigv4 import SignedRequest, session_token, verify
from lambdahost.config import Credentials, Keyring
from lambdahost.control.iam import (
    AccessDenied,
    AssumedRoleCaller,
    Caller,
    authorize,
    principal_matches,
)
from lambdahost.control.sts.revocations import SessionRevocations
from lambdahost.control.sts.sessions import (
    ExpiredToken,
    Principals,
    Sessions,
    StsValidationError,
)
from lambdahost.control.sts.tokens import KEY_FILE, TokenKey, role_id
from lambdahost.errors import NotImplementedOperation
from lambdahost.store.db import Database

A, B = "000000000000", "000000000002"
ROLE = f"arn:aws:iam::{A}:role/service-role/worker"
ROOT = Credentials("AKLHROOT", "root-secret")


@pytest.fixture
def key() -> TokenKey:
    return TokenKey(b"k" * 32)


@pytest.fixture
def sessions(key: TokenKey) -> Sessions:
    return Sessions(key, function_lifetime_s=3600)


@pytest.fixture
def principals(tmp_path: Path, sessions: Sessions) -> Principals:
    return Principals(Keyring(tmp_path, ROOT, A), sessions)


# --- the token -------------------------------------------------------------------------------


def test_a_sealed_session_opens_with_its_own_key_id_only(key: TokenKey) -> None:
    creds = key.seal(ROLE, "alice", 1_000, 2_000)
    session = creds.session
    assert re.fullmatch(r"ASIA[A-Z2-7]{16}", session.access_key_id)
    assert key.open(session.access_key_id, creds.session_token) == session
    assert (session.account_id, session.issued_ms, session.expires_ms) == (A, 1_000, 2_000)
    assert session.arn == f"arn:aws:sts::{A}:assumed-role/worker/alice"  # no role path
    assert session.user_id == f"{role_id(ROLE)}:alice"
    assert re.fullmatch(r"AROA[A-Z2-7]{17}", role_id(ROLE)) and role_id(ROLE) == role_id(ROLE)
    # The secret derives from the key id, 40 characters like AWS's; no two sessions share one.
    assert creds.secret_access_key == key.secret_for(session.access_key_id)
    assert len(creds.secret_access_key) == 40
    assert key.seal(ROLE, "alice", 1_000, 2_000).secret_access_key != creds.secret_access_key
    other = key.seal(ROLE, "bob", 1_000, 2_000)
    assert key.open(other.session.access_key_id, creds.session_token) is None


def test_tampered_foreign_and_malformed_tokens_do_not_open(key: TokenKey) -> None:
    creds = key.seal(ROLE, "alice", 1_000, 2_000)
    access_key = creds.session.access_key_id
    raw = bytearray(base64.b64decode(creds.session_token))
    for at in (0, 5, len(raw) // 2, len(raw) - 1):  # version, key id, payload, MAC
        forged = bytearray(raw)
        forged[at] ^= 0x01
        assert key.open(access_key, base64.b64encode(forged).decode()) is None
    # A longer life, claimed by rewriting the payload, needs a MAC only the key makes.
    rewritten = bytes(raw[:-32]).replace(b"\n2000", b"\n9999") + bytes(raw[-32:])
    assert key.open(access_key, base64.b64encode(rewritten).decode()) is None
    assert TokenKey(b"x" * 32).open(access_key, creds.session_token) is None
    for garbage in ("", "!!!", "QUJD", "A" * 10_000, base64.b64encode(b"\x01" * 40).decode()):
        assert key.open(access_key, garbage) is None


def test_the_key_file_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = TokenKey.in_dir(tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == 32
    creds = first.seal(ROLE, "alice", 1, 2)
    path.chmod(0o644)  # a careless copy
    again = TokenKey.in_dir(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again.open(creds.session.access_key_id, creds.session_token) == creds.session
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # nothing left aside
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="not a session key"):
        TokenKey.in_dir(tmp_path)


# --- sessions --------------------------------------------------------------------------------


def test_sessions_expire(sessions: Sessions) -> None:
    creds = sessions.key.seal(ROLE, "alice", 1_000, 2_000)
    access_key, token = creds.session.access_key_id, creds.session_token
    assert sessions.open(access_key, token, at_ms=1_999) == creds.session
    with pytest.raises(ExpiredToken, match="The security token included in the request is exp"):
        sessions.open(access_key, token, at_ms=2_000)
    assert sessions.open(access_key, "forged", at_ms=1_000) is None


def test_assume_role(sessions: Sessions) -> None:
    root = Caller.root(A, "AKLHROOT")
    before = time.time()
    out = sessions.assume_role(root, {"RoleArn": ROLE, "RoleSessionName": "alice"})
    creds, user = out["Credentials"], out["AssumedRoleUser"]
    assert abs(creds["Expiration"] - (before + 3600)) < 5
    assert user == {
        "AssumedRoleId": f"{role_id(ROLE)}:alice",
        "Arn": f"arn:aws:sts::{A}:assumed-role/worker/alice",
    }
    opened = sessions.open(creds["AccessKeyId"], creds["SessionToken"])
    assert opened is not None and opened.role_arn == ROLE
    assert "SourceIdentity" not in out
    tagged = {"RoleArn": ROLE, "RoleSessionName": "a1", "SourceIdentity": "me@example.com"}
    assert sessions.assume_role(root, tagged)["SourceIdentity"] == "me@example.com"

    with pytest.raises(StsValidationError, match="^Request ARN is invalid$"):
        sessions.assume_role(root, {"RoleArn": "not an arn at all, really", "RoleSessionName": "a"})
    for target in (f"arn:aws:iam::{B}:role/worker", f"arn:aws:iam::{A}:user/bob"):
        with pytest.raises(AccessDenied) as denied:
            sessions.assume_role(root, {"RoleArn": target, "RoleSessionName": "alice"})
        assert denied.value.message == (
            f"User: arn:aws:iam::{A}:root is not authorized to perform: sts:AssumeRole on "
            f"resource: {target}"
        )
    with pytest.raises(NotImplementedOperation):
        sessions.assume_role(
            root, {"RoleArn": ROLE, "RoleSessionName": "alice", "PolicyArns": [{"arn": "x"}]}
        )
    chained = Principals(Keyring(Path("/nonexistent"), ROOT, A), sessions).identify(
        creds["AccessKeyId"], creds["SessionToken"]
    )
    assert chained is not None
    with pytest.raises(StsValidationError, match="1 hour session limit .* role chaining"):
        sessions.assume_role(
            chained.caller, {"RoleArn": ROLE, "RoleSessionName": "hop", "DurationSeconds": 3601}
        )


def test_function_credentials(sessions: Sessions) -> None:
    now = time.time()
    creds = sessions.for_function(A, ROLE, "my-function")
    assert creds is not None
    variables = creds.variables
    assert set(variables) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    session = sessions.open(variables["AWS_ACCESS_KEY_ID"], variables["AWS_SESSION_TOKEN"])
    assert session is not None and session.session_name == "my-function"
    assert creds.arn == f"arn:aws:sts::{A}:assumed-role/worker/my-function"
    assert abs(creds.expires_at - (now + 3600)) < 5
    assert creds.expires_at - creds.renew_by == 60  # the margin: a minute at most
    assert creds.outlive(now, 900) and not creds.outlive(creds.renew_by - 2, 3)
    # A tenth of a short lifetime.
    short = Sessions(sessions.key, function_lifetime_s=8).for_function(A, ROLE, "f")
    assert short is not None and round(short.expires_at - short.renew_by, 3) == 0.8
    # Never another account's role (a function of B naming A's role gets nothing).
    assert sessions.for_function(B, ROLE, "f") is None
    assert sessions.for_function(A, "not-a-role", "f") is None


def test_principals(principals: Principals, sessions: Sessions) -> None:
    root = principals.identify("AKLHROOT", None)
    assert root is not None and root.secret == "root-secret"
    assert root.caller == Caller.root(A, "AKLHROOT") and root.caller.user_id == A
    creds = sessions.key.seal(ROLE, "alice", int(time.time() * 1000), 2**62)
    access_key, token = creds.session.access_key_id, creds.session_token
    found = principals.identify(access_key, token)
    assert found is not None and found.secret == creds.secret_access_key
    caller = found.caller
    assert isinstance(caller, AssumedRoleCaller)
    assert (caller.account_id, caller.arn, caller.role_arn) == (A, creds.session.arn, ROLE)
    assert caller.user_id == creds.session.user_id
    # Answered alike: an unknown key, a temporary key without its token, a root key with one.
    assert principals.identify("AKLHUNKNOWN", None) is None
    assert principals.identify(access_key, None) is None
    assert principals.identify("AKLHROOT", token) is None
    expired = sessions.key.seal(ROLE, "alice", 1, 2)
    with pytest.raises(ExpiredToken):
        principals.identify(expired.session.access_key_id, expired.session_token)


# --- authorization ---------------------------------------------------------------------------


def session_caller(issued_ms: int, role_arn: str = ROLE) -> AssumedRoleCaller:
    return AssumedRoleCaller(
        A,
        f"arn:aws:sts::{A}:assumed-role/worker/alice",
        "ASIAEXAMPLE",
        role_arn=role_arn,
        session_name="alice",
        role_session_id="AROAEXAMPLE:alice",
        issued_ms=issued_ms,
    )


def test_revoking_denies_older_sessions_of_the_role(tmp_path: Path) -> None:
    db = Database.in_dir(tmp_path)
    db.migrate()
    server = SessionRevocations(db, refresh_s=0.05)
    server.refresh()
    assert not server.stale
    cli = SessionRevocations(db)  # `lambdahost credentials revoke-sessions`, another process
    cutoff = cli.revoke(ROLE, at_ms=5_000)
    assert cutoff == 5_000 and cli.revoke(ROLE, at_ms=4_000) == 5_000  # never moves back
    assert not server.denies(session_caller(1_000), "lambda:ListFunctions")  # not read yet
    server.refresh()  # not stale yet: a no-op
    assert not server.denies(session_caller(1_000), "lambda:ListFunctions")
    time.sleep(0.06)
    assert server.stale
    server.refresh()
    assert server.denies(session_caller(4_999), "lambda:ListFunctions")
    assert not server.denies(session_caller(5_000), "lambda:ListFunctions")
    assert not server.denies(session_caller(1_000, f"arn:aws:iam::{A}:role/other"), "x")
    assert not server.denies(Caller.root(A), "lambda:ListFunctions")

    with pytest.raises(AccessDenied) as denied:
        authorize(session_caller(1), "lambda:ListFunctions", "*", A, identity_denies=server.denies)
    assert denied.value.message == (
        f"User: arn:aws:sts::{A}:assumed-role/worker/alice is not authorized to perform: "
        "lambda:ListFunctions on resource: * with an explicit deny in an identity-based policy"
    )
    # "you can still perform this operation" (GetCallerIdentity needs no permission).
    authorize(session_caller(1), "sts:GetCallerIdentity", "*", A, identity_denies=server.denies)
    authorize(session_caller(9_999), "lambda:ListFunctions", "*", A, None, server.denies)
    db.close()


def test_a_policy_naming_the_role_names_its_sessions() -> None:
    caller = session_caller(1)
    assert principal_matches({"AWS": ROLE}, caller)
    assert principal_matches({"AWS": caller.arn}, caller)
    assert principal_matches({"AWS": A}, caller)
    assert not principal_matches({"AWS": f"arn:aws:iam::{A}:role/other"}, caller)


# --- SigV4 with a session token --------------------------------------------------------------


def test_sigv4_with_session_tokens(principals: Principals, sessions: Sessions) -> None:
    creds = sessions.key.seal(ROLE, "alice", int(time.time() * 1000), 2**62)
    boto = BotoCredentials(
        creds.session.access_key_id, creds.secret_access_key, creds.session_token
    )
    # Header form: botocore signs X-Amz-Security-Token along.
    request = AWSRequest("GET", "http://127.0.0.1:9000/2015-03-31/functions/")
    SigV4Auth(boto, "lambda", "us-east-1").add_auth(request)
    signed = _wire(request)
    assert session_token(signed) == creds.session_token
    signer = principals.signer(session_token(signed))
    assert verify(signed, signer.secret_for) == creds.session.access_key_id
    assert signer.found is not None and signer.found.caller.arn == creds.session.arn
    # Presigned: the token travels in the query (its "+" and "/" percent-encoded).
    presign = AWSRequest("GET", "http://127.0.0.1:9000/2015-03-31/functions/")
    SigV4QueryAuth(boto, "lambda", "us-east-1", expires=60).add_auth(presign)
    signed = _wire(presign)
    assert session_token(signed) == creds.session_token
    assert verify(signed, principals.signer(session_token(signed)).secret_for)


def _wire(request: AWSRequest) -> SignedRequest:
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = [*prepared.headers.items(), ("Host", url.netloc)]
    return SignedRequest(prepared.method, url.path, url.query, headers, b"")


def test_issuing_and_proving_are_cheap(principals: Principals, sessions: Sessions) -> None:
    """Issuing happens on every cold start, proving on every request with a session token:
    both well under a millisecond (a loose bound: the host is shared)."""
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        issued = sessions.for_function(A, ROLE, "f")
    issue_us = (time.perf_counter() - started) / rounds * 1e6
    assert issued is not None
    access_key = issued.variables["AWS_ACCESS_KEY_ID"]
    token = issued.variables["AWS_SESSION_TOKEN"]
    started = time.perf_counter()
    for _ in range(rounds):
        principals.identify(access_key, token)
    prove_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"issue {issue_us:.1f} µs, prove {prove_us:.1f} µs")
    assert issue_us < 500 and prove_us < 500
