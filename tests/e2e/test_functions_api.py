"""The function control plane through boto3 against the real server."""

from __future__ import annotations

import base64
import hashlib
import urllib.request

import pytest
from botocore.exceptions import ClientError
from helpers import PY_ECHO, ROLE, create_function, make_zip, unique


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_create_reports_pending_then_active(lam) -> None:
    name = unique("create")
    created = create_function(lam, name, wait=False, Description="d", Tags={"team": "a"})
    assert created["State"] == "Pending"
    assert created["StateReasonCode"] == "Creating"
    assert created["Version"] == "$LATEST"
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert created["CodeSha256"] == base64.b64encode(hashlib.sha256(PY_ECHO).digest()).decode()
    assert created["CodeSize"] == len(PY_ECHO)
    assert created["PackageType"] == "Zip"
    assert created["Architectures"] == ["x86_64"]
    assert created["EphemeralStorage"] == {"Size": 512}
    assert created["MemorySize"] == 128 and created["Timeout"] == 3
    assert created["LoggingConfig"]["LogGroup"] == f"/aws/lambda/{name}"
    assert created["TracingConfig"] == {"Mode": "PassThrough"}
    assert created["LastModified"].endswith("+0000")
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    got = lam.get_function(FunctionName=name)
    assert got["Configuration"]["State"] == "Active"
    assert got["Configuration"]["LastUpdateStatus"] == "Successful"
    assert got["Tags"] == {"team": "a"}
    assert got["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(got["Code"]["Location"]) as response:
        assert response.read() == PY_ECHO


def test_code_location_rejects_tampered_signature(lam) -> None:
    name = unique("codeurl")
    create_function(lam, name)
    location = lam.get_function(FunctionName=name)["Code"]["Location"]
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(location[:-4] + "0000")
    assert exc.value.code == 403


def test_every_way_to_name_a_function(lam) -> None:
    name = unique("names")
    create_function(lam, name)
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    for identifier in (
        name,
        f"000000000000:function:{name}",
        arn,
        f"{name}:$LATEST",
        f"{arn}:$LATEST",
    ):
        config = lam.get_function_configuration(FunctionName=identifier)
        assert config["FunctionName"] == name, identifier
    # Another account's ARN: denied (its policy would have to grant us), as in AWS.
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=f"arn:aws:lambda:us-east-1:111111111111:function:{name}")
    assert error_code(exc) == "AccessDeniedException" and status(exc) == 403


def test_missing_function_is_404(lam) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName="does-not-exist")
    assert status(exc) == 404
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName="does-not-exist")


def test_duplicate_create_conflicts(lam) -> None:
    name = unique("dup")
    create_function(lam, name, wait=False)
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        create_function(lam, name, wait=False)
    assert status(exc) == 409


def test_list_functions_paginates(lam) -> None:
    prefix = unique("page")
    names = sorted(f"{prefix}-{i}" for i in range(5))
    for name in names:
        create_function(lam, name, wait=False)
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        kwargs = {"MaxItems": 2, **({"Marker": marker} if marker else {})}
        page = lam.list_functions(**kwargs)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert [n for n in seen if n.startswith(prefix)] == names
    assert pages >= 3
    paginated = [
        f["FunctionName"]
        for p in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 3})
        for f in p["Functions"]
    ]
    assert [n for n in paginated if n.startswith(prefix)] == names


def test_update_code_and_configuration(lam) -> None:
    name = unique("update")
    create_function(lam, name)
    new_zip = make_zip({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    updated = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert updated["LastUpdateStatus"] == "InProgress"
    assert updated["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        lam.update_function_configuration(FunctionName=name, MemorySize=256)
    assert "update is in progress" in str(exc.value)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    config = lam.update_function_configuration(
        FunctionName=name,
        MemorySize=256,
        Timeout=30,
        Environment={"Variables": {"GREETING": "hi"}},
        Description="new",
    )
    assert config["MemorySize"] == 256 and config["Timeout"] == 30
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    got = lam.get_function_configuration(FunctionName=name)
    assert got["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert got["Description"] == "new"
    assert got["LastUpdateStatus"] == "Successful"
    assert got["CodeSize"] == len(new_zip)


def test_revision_id_is_checked(lam) -> None:
    name = unique("revision")
    created = create_function(lam, name)
    current = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    # Pending -> Active is a change of its own: a new RevisionId, as in Lambda.
    assert current != created["RevisionId"]
    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId="stale")
    assert status(exc) == 412
    updated = lam.update_function_configuration(FunctionName=name, Timeout=5, RevisionId=current)
    assert updated["RevisionId"] != current


def test_delete_function(lam) -> None:
    name = unique("delete")
    create_function(lam, name)
    response = lam.delete_function(FunctionName=name)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)


def test_tags(lam) -> None:
    name = unique("tags")
    arn = create_function(lam, name)["FunctionArn"]
    lam.tag_resource(Resource=arn, Tags={"a": "1", "b": "2"})
    lam.untag_resource(Resource=arn, TagKeys=["a"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=arn + "-missing")


def test_account_settings(lam) -> None:
    settings = lam.get_account_settings()
    assert settings["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert settings["AccountLimit"]["CodeSizeUnzipped"] == 262144000
    assert settings["AccountUsage"]["FunctionCount"] >= 0


BAD_CONFIGS = [
    ({"Runtime": "python3.9"}, "InvalidParameterValueException"),
    ({"Runtime": "cobol"}, "ValidationException"),
    ({"MemorySize": 64}, "ValidationException"),
    ({"MemorySize": 20480}, "InvalidParameterValueException"),
    ({"Timeout": 0}, "ValidationException"),
    ({"Timeout": 901}, "InvalidParameterValueException"),
    ({"Handler": "has space"}, "ValidationException"),
    ({"Handler": None}, "InvalidParameterValueException"),
    ({"Role": "not-a-role"}, "ValidationException"),
    ({"FunctionName": "bad name!"}, "ValidationException"),
    # AWS: the validation text, as InvalidParameterValueException (recorded in LocalStack's
    # test_lambda_api.snapshot.json, function_name_too_long-create_function).
    ({"FunctionName": "x" * 65}, "InvalidParameterValueException"),
    ({"Environment": {"Variables": {"BIG": "x" * 5000}}}, "InvalidParameterValueException"),
    ({"Environment": {"Variables": {"AWS_REGION": "eu-west-1"}}}, "InvalidParameterValueException"),
    (
        {"Layers": [f"arn:aws:lambda:us-east-1:000000000000:layer:l:{i}" for i in range(1, 7)]},
        "InvalidParameterValueException",
    ),
    ({"EphemeralStorage": {"Size": 20000}}, "InvalidParameterValueException"),
    ({"Code": {"S3Bucket": "bucket", "S3Key": "k.zip"}}, "InvalidParameterValueException"),
]


@pytest.mark.parametrize(("override", "code"), BAD_CONFIGS)
def test_invalid_configuration_is_rejected(raw_lam, override: dict, code: str) -> None:
    params = {
        "FunctionName": unique("bad"),
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": PY_ECHO},
    }
    params.update(override)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(ClientError) as exc:
        raw_lam.create_function(**params)
    assert error_code(exc) == code, exc.value.response["Error"]
    assert status(exc) == 400
    assert exc.value.response["Error"]["Message"]


def test_unimplemented_operation_is_a_clear_error(lam) -> None:
    with pytest.raises(ClientError) as exc:
        lam.list_code_signing_configs()
    assert error_code(exc) == "NotImplementedException"
    assert "ListCodeSigningConfigs" in exc.value.response["Error"]["Message"]


def test_malformed_bodies_get_400_not_500(server) -> None:
    import json as _json
    import urllib.error
    import urllib.request

    from helpers import start_server

    bodies = [
        b"{not json",
        b"[]",
        b'{"FunctionName": 5}',
        _json.dumps(
            {
                "FunctionName": "a",
                "Role": ROLE,
                "Runtime": "python3.11",
                "Handler": "a.b",
                "Code": {"ZipFile": [1, 2]},
            }
        ).encode(),
        _json.dumps(
            {
                "FunctionName": "a",
                "Role": ROLE,
                "Runtime": "python3.11",
                "Handler": "a.b",
                "Code": {"ZipFile": "!!!"},
            }
        ).encode(),
    ]
    srv = start_server(server.data_dir.parent / "malformed", "--no-auth")
    try:
        for body in bodies:
            request = urllib.request.Request(
                f"{srv.url}/2015-03-31/functions", data=body, method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(request)
            assert exc.value.code == 400, body
            assert exc.value.headers["x-amzn-ErrorType"] in (
                "ValidationException",
                "InvalidParameterValueException",
                "InvalidRequestContentException",  # the body is not JSON, as Lambda names it
            )
        assert "Traceback" not in srv.log()
    finally:
        srv.kill()
