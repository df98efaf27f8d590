"""Versions and aliases, including weighted routing on invoke."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from botocore.exceptions import ClientError
from helpers import create_function, make_zip, unique


def code(value: str) -> bytes:
    return make_zip({"app.py": f"def handler(e, c):\n    return {value!r}\n"})


def invoke(lam, name: str, **kw) -> tuple[dict, object]:  # noqa: ANN001
    response = lam.invoke(FunctionName=name, Payload=b"{}", **kw)
    return response, json.loads(response["Payload"].read())


def update_code(lam, name: str, value: str) -> None:  # noqa: ANN001
    lam.update_function_code(FunctionName=name, ZipFile=code(value))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})


@pytest.fixture(scope="module")
def versioned(lam) -> str:
    name = unique("versions")
    create_function(lam, name, code("v1"))
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    update_code(lam, name, "v2")
    assert lam.publish_version(FunctionName=name, Description="second")["Version"] == "2"
    return name


def test_publish_is_a_snapshot(lam, versioned: str) -> None:
    v1 = lam.get_function_configuration(FunctionName=versioned, Qualifier="1")
    assert v1["Version"] == "1"
    assert v1["FunctionArn"].endswith(f"{versioned}:1")
    assert (
        lam.get_function(FunctionName=f"{versioned}:2")["Configuration"]["Description"] == "second"
    )
    # Publishing an unchanged $LATEST returns the newest version.
    assert lam.publish_version(FunctionName=versioned)["Version"] == "2"


def test_invoke_versions(lam, versioned: str) -> None:
    response, body = invoke(lam, versioned, Qualifier="1")
    assert body == "v1" and response["ExecutedVersion"] == "1"
    response, body = invoke(lam, f"{versioned}:2")
    assert body == "v2" and response["ExecutedVersion"] == "2"
    arn = lam.get_function_configuration(FunctionName=versioned)["FunctionArn"]
    assert invoke(lam, f"{arn}:1")[1] == "v1"
    response, body = invoke(lam, versioned)
    assert response["ExecutedVersion"] == "$LATEST"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        invoke(lam, versioned, Qualifier="99")


def test_publish_guards(lam, versioned: str) -> None:
    # A wrong CodeSha256 is a 400 (recorded AWS answer, localstack
    # test_lambda_api.snapshot.json: test_publish_with_wrong_sha256).
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.publish_version(FunctionName=versioned, CodeSha256="wrong")
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.publish_version(FunctionName=versioned, RevisionId="wrong")


def test_list_versions_paginates(lam, versioned: str) -> None:
    pages = list(
        lam.get_paginator("list_versions_by_function").paginate(
            FunctionName=versioned, PaginationConfig={"PageSize": 1}
        )
    )
    versions = [v["Version"] for p in pages for v in p["Versions"]]
    assert versions == ["$LATEST", "1", "2"]
    assert len(pages) == 3


def test_publish_on_create_and_update(lam) -> None:
    name = unique("publish-flag")
    created = create_function(lam, name, code("a"), Publish=True)
    assert created["Version"] == "1"
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    updated = lam.update_function_code(FunctionName=name, ZipFile=code("b"), Publish=True)
    assert updated["Version"] == "2"


def test_delete_version_and_function(lam) -> None:
    name = unique("delete-version")
    create_function(lam, name, code("x"), Publish=True)
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="1")
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    update_code(lam, name, "y")
    lam.publish_version(FunctionName=name)
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="2")


def test_alias_lifecycle(lam, versioned: str) -> None:
    alias = lam.create_alias(
        FunctionName=versioned, Name="live", FunctionVersion="1", Description="d"
    )
    assert alias["AliasArn"].endswith(f"{versioned}:live")
    assert lam.get_alias(FunctionName=versioned, Name="live")["FunctionVersion"] == "1"
    response, body = invoke(lam, versioned, Qualifier="live")
    assert body == "v1" and response["ExecutedVersion"] == "1"
    updated = lam.update_alias(FunctionName=versioned, Name="live", FunctionVersion="2")
    assert updated["RevisionId"] != alias["RevisionId"]
    assert invoke(lam, f"{versioned}:live")[1] == "v2"
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(FunctionName=versioned, Name="live", RevisionId="stale")
    assert [a["Name"] for a in lam.list_aliases(FunctionName=versioned)["Aliases"]] == ["live"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=versioned, Qualifier="2")
    lam.delete_alias(FunctionName=versioned, Name="live")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=versioned, Name="live")


@pytest.mark.parametrize(
    ("name", "version", "routing"),
    [
        ("123", "1", None),
        ("$LATEST", "1", None),
        ("bad", "99", None),
        ("bad", "1", {"2": 1.5}),
        ("bad", "$LATEST", {"2": 0.5}),
        ("bad", "1", {"$LATEST": 0.5}),
        ("bad", "1", {"99": 0.5}),
    ],
)
def test_alias_rules(
    raw_lam, versioned: str, name: str, version: str, routing: dict | None
) -> None:
    params = {"FunctionName": versioned, "Name": name, "FunctionVersion": version}
    if routing:
        params["RoutingConfig"] = {"AdditionalVersionWeights": routing}
    with pytest.raises(ClientError) as exc:
        raw_lam.create_alias(**params)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)


def test_weighted_routing(lam, versioned: str) -> None:
    lam.create_alias(
        FunctionName=versioned,
        Name="canary",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    counts = Counter(
        invoke(lam, versioned, Qualifier="canary")[0]["ExecutedVersion"] for _ in range(60)
    )
    assert counts["1"] >= 12 and counts["2"] >= 12, counts
    got = lam.get_alias(FunctionName=versioned, Name="canary")
    assert got["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}


def test_list_functions_with_all_versions(lam, versioned: str) -> None:
    pages = lam.get_paginator("list_functions").paginate(
        FunctionVersion="ALL", PaginationConfig={"PageSize": 2}
    )
    mine = [
        f["Version"] for page in pages for f in page["Functions"] if f["FunctionName"] == versioned
    ]
    assert mine == ["$LATEST", "1", "2"]
    plain = [
        f["FunctionName"]
        for page in lam.get_paginator("list_functions").paginate()
        for f in page["Functions"]
    ]
    assert plain.count(versioned) == 1
