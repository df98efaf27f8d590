"""Accounts: the credentials file and its keys, a store per account (a SQLite file, or a
PostgreSQL schema), the authorization seam and the resource policies it consults."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from lambda_services import wire_functions
from pg import PostgresServer, postgresql_fixture

from lambdahost.api.lambda_.resources import foreign_resource
from lambdahost.config import (
    Credentials,
    Keyring,
    Settings,
    add_credentials,
    load_credentials,
    read_credentials_file,
)
from lambdahost.control.iam import AccessDenied, Caller, authorize, principal_matches
from lambdahost.control.lambda_.changes import FunctionChanges
from lambdahost.control.lambda_.layers import LayerService
from lambdahost.control.lambda_.permissions import PermissionService
from lambdahost.store.blobs import BlobStore
from lambdahost.store.db import Database, account_schema
from lambdahost.store.tables import Base

postgresql = postgresql_fixture()
A, B = "000000000000", "000000000002"

# --- the credentials file -------------------------------------------------------------------


def test_the_single_key_file_of_older_versions_is_the_default_accounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAMBDAHOST_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("LAMBDAHOST_SECRET_ACCESS_KEY", raising=False)
    (tmp_path / "credentials").write_text("aws_access_key_id=AKOLD\naws_secret_access_key=s1\n")
    root, generated = load_credentials(tmp_path)
    assert root == Credentials("AKOLD", "s1") and not generated
    added = add_credentials(tmp_path, B)
    assert added.account_id == B and added.access_key_id.startswith("AKLH")
    stored = read_credentials_file(tmp_path / "credentials")
    assert stored == [Credentials("AKOLD", "s1"), added]
    assert load_credentials(tmp_path)[0] == root  # still the default account's root
    assert stat.S_IMODE((tmp_path / "credentials").stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="12-digit"):
        add_credentials(tmp_path, "123")


def test_a_first_start_writes_one_key_then_keys_are_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAMBDAHOST_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("LAMBDAHOST_SECRET_ACCESS_KEY", raising=False)
    root, generated = load_credentials(tmp_path)
    assert generated and root.account_id == ""
    add_credentials(tmp_path, B)
    add_credentials(tmp_path, B)
    keys = read_credentials_file(tmp_path / "credentials")
    assert [k.account_id for k in keys] == ["", B, B]


def test_the_keyring_sees_keys_added_while_it_runs(tmp_path: Path) -> None:
    root = Credentials("AKENVROOT", "from-env")  # $LAMBDAHOST_ACCESS_KEY_ID: no file needed
    keyring = Keyring(tmp_path, root, A)
    assert keyring.lookup("AKENVROOT") == Credentials("AKENVROOT", "from-env", A)
    assert keyring.lookup("AKNOTYET") is None
    added = add_credentials(tmp_path, B)
    assert keyring.secret_for(added.access_key_id) == added.secret_access_key
    assert keyring.lookup(added.access_key_id) == added
    assert keyring.accounts() == {A, B}
    assert keyring.lookup("AKSTILLNOT") is None  # an unchanged file is not read again


# --- a store per account --------------------------------------------------------------------


def zip_of(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("app.py", source)
    return buffer.getvalue()


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Database]]:
    """Two accounts' stores as a server keeps them: SQLite files in the data dir and under
    accounts/<id>/, or two schemas of one PostgreSQL database."""
    if request.param == "sqlite":
        other = tmp_path / "accounts" / B
        other.mkdir(parents=True)
        stores = [Database.in_dir(tmp_path), Database.in_dir(other)]
        for db in stores:
            db.migrate()
        yield stores
        for db in stores:
            db.close()
        return
    server: PostgresServer = request.getfixturevalue("postgresql")
    name = server.create_database()
    stores = [Database(server.url(name), schema=account_schema(acct)) for acct in (A, B)]
    try:
        for db in stores:
            db.migrate()
            db.migrate()  # idempotent
        yield stores
    finally:
        for db in stores:
            db.close()
        server.drop_database(name)


def test_each_accounts_store_is_migrated_and_apart(
    two_stores: list[Database], tmp_path: Path
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    services = []
    for db, account in zip(two_stores, (A, B), strict=True):
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        settings = Settings(data_dir=tmp_path, account_id=account, transition_delay_s=0.0)
        layers = LayerService(settings, db, blobs)
        services.append(wire_functions(settings, db, blobs, layers, lambda fn: fn()))
    mine, theirs = services
    made = [
        fns.create(
            {"FunctionName": "same", "Runtime": "python3.11", "Handler": "app.h", "Code": code}
        )
        for fns, code in (
            (mine, {"ZipFile": zip_of("A = 1\n")}),
            (theirs, {"ZipFile": zip_of("B = 2\n")}),
        )
    ]
    assert made[0]["FunctionArn"] == f"arn:aws:lambda:us-east-1:{A}:function:same"
    assert made[1]["FunctionArn"] == f"arn:aws:lambda:us-east-1:{B}:function:same"
    assert made[0]["CodeSha256"] != made[1]["CodeSha256"]
    theirs.delete("same")
    assert [f["FunctionName"] for f in mine.list(None, None)["Functions"]] == ["same"]
    assert theirs.list(None, None)["Functions"] == []


def test_an_account_schema_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Database(f"sqlite:///{tmp_path / 'x.db'}", schema="account_1")


# --- authorization --------------------------------------------------------------------------


def test_authorize_allows_the_own_account_and_asks_the_policy_for_others() -> None:
    a, b = Caller.root(A), Caller.root(B)
    arn = f"arn:aws:lambda:us-east-1:{A}:function:f"
    authorize(a, "lambda:DeleteFunction", arn, A)
    with pytest.raises(AccessDenied) as caught:
        authorize(b, "lambda:InvokeFunction", arn, A)
    assert caught.value.status == 403 and caught.value.code == "AccessDeniedException"
    assert caught.value.message == (
        f"User: arn:aws:iam::{B}:root is not authorized to perform: lambda:InvokeFunction on "
        f"resource: {arn} because no resource-based policy allows the lambda:InvokeFunction "
        "action"
    )
    asked: list[tuple[Caller, str]] = []
    authorize(b, "lambda:InvokeFunction", arn, A, lambda c, act: asked.append((c, act)) is None)
    assert asked == [(b, "lambda:InvokeFunction")]
    with pytest.raises(AccessDenied):
        authorize(b, "lambda:InvokeFunction", arn, A, lambda c, act: False)


@pytest.mark.parametrize(
    ("principal", "matches"),
    [
        ("*", True),
        ({"AWS": "*"}, True),
        ({"AWS": B}, True),
        ({"AWS": f"arn:aws:iam::{B}:root"}, True),
        ({"AWS": [f"arn:aws:iam::{A}:root", f"arn:aws:iam::{B}:root"]}, True),
        ({"AWS": f"arn:aws:iam::{A}:root"}, False),
        ({"Service": "s3.amazonaws.com"}, False),
        (None, False),
    ],
)
def test_principals_that_name_a_caller(principal: object, matches: bool) -> None:
    assert principal_matches(principal, Caller.root(B)) is matches


def test_function_policies_grant_other_accounts_what_they_name(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, transition_delay_s=0.0)
    db = Database.in_dir(tmp_path)
    db.migrate()
    blobs = BlobStore(tmp_path / "blobs")
    functions = wire_functions(
        settings, db, blobs, LayerService(settings, db, blobs), lambda f: f()
    )
    permissions = PermissionService(functions, FunctionChanges())
    functions.create(
        {
            "FunctionName": "f",
            "Runtime": "python3.11",
            "Handler": "a.h",
            "Code": {"ZipFile": zip_of("")},
        }
    )
    b = Caller.root(B)
    assert not permissions.allows(b, "f", "", "lambda:InvokeFunction")
    permissions.add(
        {"FunctionName": "f", "StatementId": "1", "Action": "lambda:InvokeFunction", "Principal": B}
    )
    assert permissions.allows(b, "f", "", "lambda:InvokeFunction")
    assert not permissions.allows(b, "f", "", "lambda:GetFunction")
    assert not permissions.allows(Caller.root("000000000003"), "f", "", "lambda:InvokeFunction")
    permissions.add(
        {
            "FunctionName": "f",
            "StatementId": "2",
            "Action": "lambda:*",
            "Principal": "*",
            "SourceAccount": B,  # a condition a direct call does not carry
        }
    )
    assert not permissions.allows(b, "f", "", "lambda:GetFunction")
    db.close()


def test_the_resource_a_call_names_in_another_account() -> None:
    arn = f"arn:aws:lambda:us-east-1:{A}:function:f"
    assert foreign_resource("Invoke", {"FunctionName": "f"}, B) is None
    assert foreign_resource("Invoke", {"FunctionName": arn}, A) is None
    got = foreign_resource("Invoke", {"FunctionName": arn + ":live"}, B)
    assert got is not None and (got.account_id, got.name, got.qualifier) == (A, "f", "live")
    assert got.action == "lambda:InvokeFunction"
    partial = foreign_resource("GetFunction", {"FunctionName": f"{A}:function:f"}, B)
    assert partial is not None and partial.action == "lambda:GetFunction"
    layer = foreign_resource(
        "GetLayerVersionByArn", {"Arn": f"arn:aws:lambda:us-east-1:{A}:layer:l:3"}, B
    )
    assert layer is not None and (layer.kind, layer.name, layer.version) == ("layer", "l", 3)
    assert layer.action == "lambda:GetLayerVersion"
