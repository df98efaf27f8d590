"""Fidelity to AWS (issue 12, items 8 and 9): validations AWS makes that we lacked, and the
smaller response shapes, through boto3 against the real server. Messages are compared exactly.

Where AWS's documentation does not give the wording, the source is LocalStack's AWS-validated
snapshot files (responses recorded from AWS): tests/aws/services/lambda_/
test_lambda_api.snapshot.json and test_lambda.snapshot.json in localstack/localstack, named
below by their test and key."""

from __future__ import annotations

import base64
import uuid

import pytest
from botocore.exceptions import ClientError
from helpers import PY_ECHO, create_function, make_zip, unique

ACCOUNT, REGION = "000000000000", "us-east-1"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:"
STATE_FIELDS = {
    "State",
    "StateReason",
    "StateReasonCode",
    "LastUpdateStatus",
    "LastUpdateStatusReason",
    "LastUpdateStatusReasonCode",
}


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def wait_updated(lam, name: str, qualifier: str | None = None) -> None:  # noqa: ANN001
    extra = {"Qualifier": qualifier} if qualifier else {}
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}, **extra
    )


@pytest.fixture(scope="module")
def fn(lam) -> str:  # noqa: ANN001
    name = unique("fidv")
    create_function(lam, name)
    return name


# -- 8. validations -----------------------------------------------------------------------


# test_permission_exceptions: add_permission_principal_invalid.
def test_add_permission_refuses_an_invalid_principal(lam, fn: str) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        lam.add_permission(
            FunctionName=fn,
            StatementId="lambda",
            Action="lambda:InvokeFunction",
            Principal="invalid.nonaws.com",
        )
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        "The provided principal was invalid. Please check the principal and try again.",
    )
    for sid, principal in [
        ("service", "s3.amazonaws.com"),
        ("account", "111122223333"),
        ("role", "arn:aws:iam::111122223333:role/caller"),
        ("anyone", "*"),
    ]:
        lam.add_permission(
            FunctionName=fn, StatementId=sid, Action="lambda:InvokeFunction", Principal=principal
        )


# test_function_concurrency_exceptions: put_function_concurrency_with_qualified_arn and
# put_function_concurrency_with_function_name_doesnotexist.
def test_put_function_concurrency_refuses_a_qualified_arn(lam, fn: str) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(
            FunctionName=f"{ARN}{fn}:$LATEST", ReservedConcurrentExecutions=0
        )
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        "This operation is permitted on Lambda functions only. Aliases and versions do not "
        "support this operation. Please specify either a function name or an unqualified "
        "function ARN.",
    )
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName="doesnotexist", ReservedConcurrentExecutions=1)
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        f"Function not found: {ARN}doesnotexist:$LATEST",
    )


# test_tag_limits (50 tags taken, a 51st refused, on TagResource and CreateFunction) and
# test_tag_exceptions: tag_empty_tags, untag_empty_keys.
def test_tag_limits_and_empty_tags(lam, raw_lam, fn: str) -> None:  # noqa: ANN001
    arn = f"{ARN}{fn}"
    too_many = (400, "InvalidParameterValueException", "Number of tags exceeds resource tag limit.")
    with pytest.raises(ClientError) as exc:
        lam.tag_resource(Resource=arn, Tags={f"{k}_key": f"{k}_value" for k in range(51)})
    assert error(exc) == too_many
    lam.tag_resource(Resource=arn, Tags={f"{k}_key": f"{k}_value" for k in range(50)})
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 50
    with pytest.raises(ClientError) as exc:
        lam.tag_resource(Resource=arn, Tags={"a_key": "a_value"})
    assert error(exc) == too_many
    with pytest.raises(ClientError) as exc:
        create_function(
            lam, unique("tags"), wait=False, Tags={f"{k}_key": f"{k}_value" for k in range(51)}
        )
    assert error(exc) == too_many

    with pytest.raises(ClientError) as exc:
        raw_lam.tag_resource(Resource=arn, Tags={})
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        "An error occurred and the request cannot be processed.",
    )
    with pytest.raises(ClientError) as exc:
        raw_lam.untag_resource(Resource=arn, TagKeys=[])
    assert error(exc) == (
        400,
        "ValidationException",
        "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: "
        "Member must not be null",
    )
    with pytest.raises(ClientError) as exc:  # TagKey has a minimum length of 1 (the model)
        raw_lam.tag_resource(Resource=arn, Tags={"": "value"})
    status, code, _ = error(exc)
    assert (status, code) == (400, "ValidationException")
    lam.untag_resource(Resource=arn, TagKeys=[f"{k}_key" for k in range(50)])
    assert lam.list_tags(Resource=arn)["Tags"] == {}


# test_layer_function_exceptions: two_/three_/two_identical_layer_versions_single_function_exc;
# test_layer_exceptions: get_layer_version_exc_layer_version_doesnotexist_negative/_zero,
# delete_layer_version_exc_layerversion_invalid_version.
def test_layer_versions_rules(lam, fn: str) -> None:  # noqa: ANN001
    layer = unique("fidv-layer")
    content = {"ZipFile": make_zip({"python/l.py": "X = 1\n"})}
    one = lam.publish_layer_version(LayerName=layer, Content=content)["LayerVersionArn"]
    two = lam.publish_layer_version(LayerName=layer, Content=content)["LayerVersionArn"]
    three = lam.publish_layer_version(LayerName=layer, Content=content)["LayerVersionArn"]
    for layers, first, second in [
        ([one, two], one, two),
        ([one, two, three], one, two),
        ([one, one], one, one),
    ]:
        with pytest.raises(ClientError) as exc:
            lam.update_function_configuration(FunctionName=fn, Layers=layers)
        assert error(exc) == (
            400,
            "InvalidParameterValueException",
            "Two different versions of the same layer are not allowed to be referenced in the "
            f"same function. {first} and {second} are versions of the same layer.",
        )
    for number in (0, -1):
        with pytest.raises(ClientError) as exc:
            lam.get_layer_version(LayerName=layer, VersionNumber=number)
        assert error(exc) == (
            400,
            "InvalidParameterValueException",
            "Layer Version Cannot be less than 1",
        )
    with pytest.raises(ClientError) as exc:
        lam.delete_layer_version(LayerName=layer, VersionNumber=-1)
    assert error(exc)[2] == "Layer Version Cannot be less than 1"


# test_lambda_eventinvokeconfig_exceptions: put_functionname_nootherargs (checked before the
# function is looked up), put_functionname_name_notfound, list_function_doesnotexist,
# update_eventinvokeconfig_function_doesnotexist.
def test_event_invoke_config_rules(lam, raw_lam) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        raw_lam.put_function_event_invoke_config(FunctionName="doesnotexist")
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        "You must specify at least one of error handling or destination setting.",
    )
    missing = (404, "ResourceNotFoundException", "The function doesn't exist.")
    with pytest.raises(ClientError) as exc:
        lam.put_function_event_invoke_config(FunctionName="doesnotexist", MaximumRetryAttempts=1)
    assert error(exc) == missing
    with pytest.raises(ClientError) as exc:
        lam.update_function_event_invoke_config(FunctionName="doesnotexist", MaximumRetryAttempts=1)
    assert error(exc) == missing
    with pytest.raises(ClientError) as exc:
        lam.list_function_event_invoke_configs(FunctionName="doesnotexist")
    assert error(exc) == missing


# test_publish_with_wrong_sha256: publish_wrong_sha256_exc.
def test_publish_version_with_a_wrong_code_sha256(lam, fn: str) -> None:  # noqa: ANN001
    current = lam.get_function_configuration(FunctionName=fn)["CodeSha256"]
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=fn, CodeSha256="somenonexistentsha256")
    assert error(exc) == (
        400,
        "InvalidParameterValueException",
        f"CodeSHA256 (somenonexistentsha256) is different from current CodeSHA256 in $LATEST "
        f"({current}). Please try again with the CodeSHA256 in $LATEST.",
    )


# test_provisioned_concurrency_exceptions and test_lambda_provisioned_lifecycle.
def test_provisioned_concurrency_rules(lam) -> None:  # noqa: ANN001
    name = unique("fidv-pc")
    create_function(lam, name, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    with pytest.raises(ClientError) as exc:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert error(exc) == (
        404,
        "ProvisionedConcurrencyConfigNotFoundException",
        "No Provisioned Concurrency Config found for this function",
    )
    for call in (lam.get_provisioned_concurrency_config, lam.delete_provisioned_concurrency_config):
        with pytest.raises(ClientError) as exc:
            call(FunctionName=name, Qualifier="$LATEST")
        assert error(exc) == (
            400,
            "InvalidParameterValueException",
            "The function resource provided must be an alias or a published version.",
        )
    with pytest.raises(ClientError) as exc:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="noalias")
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        f"Cannot find alias arn: {ARN}{name}:noalias",
    )
    with pytest.raises(ClientError) as exc:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="10")
    assert error(exc) == (404, "ResourceNotFoundException", f"Function not found: {ARN}{name}:10")
    # Deleting a config that is not there answers 204 (delete_provisioned_config_doesnotexist).
    deleted = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204

    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    try:
        with pytest.raises(ClientError) as exc:
            lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
            )
        assert error(exc) == (
            409,
            "ResourceConflictException",
            "Alias can't be used for Provisioned Concurrency configuration on an already "
            "Provisioned version",
        )
        # Reserved concurrency cannot go below what is provisioned (our wording: AWS's is not
        # recorded anywhere we could find).
        with pytest.raises(ClientError) as exc:
            lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        assert error(exc) == (
            400,
            "InvalidParameterValueException",
            "Specified ReservedConcurrentExecutions (0) is less than the function's total "
            "provisioned concurrency (1).",
        )
    finally:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")

    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
    )
    try:
        with pytest.raises(ClientError) as exc:
            lam.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
            )
        assert error(exc) == (
            409,
            "ResourceConflictException",
            "Version is pointed by a Provisioned Concurrency alias",
        )
    finally:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")


# -- 9. shapes ----------------------------------------------------------------------------


# TestLoggingConfig: JSON logs at INFO unless a level is asked for; back to Text drops them.
def test_json_log_format_defaults_both_levels_to_info(lam) -> None:  # noqa: ANN001
    name = unique("fidv-log")
    created = create_function(lam, name, LoggingConfig={"LogFormat": "JSON"})
    assert created["LoggingConfig"] == {
        "LogFormat": "JSON",
        "LogGroup": f"/aws/lambda/{name}",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "INFO",
    }
    updated = lam.update_function_configuration(
        FunctionName=name, LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG"}
    )
    assert updated["LoggingConfig"] == {
        "LogFormat": "JSON",
        "LogGroup": f"/aws/lambda/{name}",
        "ApplicationLogLevel": "DEBUG",
        "SystemLogLevel": "INFO",
    }
    wait_updated(lam, name)
    updated = lam.update_function_configuration(
        FunctionName=name, LoggingConfig={"LogFormat": "Text"}
    )
    assert updated["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}


# AWS keeps `Environment: {Variables: {}}` once variables were set, even to none (functions
# created with empty variables answer it: test_list_functions, test_layer_lifecycle
# update_fn_config), omits Environment on a function that never had any
# (test_snapstart_update_function_configuration), and `Environment: {}` without Variables
# leaves the variables alone.
def test_environment_after_update_configuration(lam) -> None:  # noqa: ANN001
    name = unique("fidv-env")
    create_function(lam, name, Environment={"Variables": {"AB": "1"}})
    updated = lam.update_function_configuration(FunctionName=name, Environment={})
    assert updated["Environment"] == {"Variables": {"AB": "1"}}
    wait_updated(lam, name)
    updated = lam.update_function_configuration(FunctionName=name, Environment={"Variables": {}})
    assert updated["Environment"] == {"Variables": {}}
    wait_updated(lam, name)
    updated = lam.update_function_configuration(FunctionName=name, Timeout=5)
    assert updated["Environment"] == {"Variables": {}}
    assert lam.get_function_configuration(FunctionName=name)["Environment"] == {"Variables": {}}

    bare = unique("fidv-noenv")
    create_function(lam, bare)
    assert "Environment" not in lam.update_function_configuration(FunctionName=bare, Timeout=5)


# Lists leave the state fields out ("To get the additional fields (State, StateReasonCode,
# StateReason, LastUpdateStatus, LastUpdateStatusReason, LastUpdateStatusReasonCode) for a
# function or version, use GetFunction": https://docs.aws.amazon.com/lambda/latest/api/
# API_ListFunctions.html), RuntimeVersionConfig too, and name $LATEST by its qualified ARN where
# versions are listed (test_list_functions: list_all, list_default; test_version_lifecycle:
# list_versions_result).
def test_listed_versions_have_no_state_fields(lam) -> None:  # noqa: ANN001
    name = unique("fidv-list")
    create_function(lam, name)
    lam.publish_version(FunctionName=name)
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [(v["Version"], v["FunctionArn"]) for v in versions] == [
        ("$LATEST", f"{ARN}{name}:$LATEST"),
        ("1", f"{ARN}{name}:1"),
    ]
    everything = lam.list_functions(FunctionVersion="ALL")["Functions"]
    listed_all = [f for f in everything if f["FunctionName"] == name]
    assert [f["FunctionArn"] for f in listed_all] == [f"{ARN}{name}:$LATEST", f"{ARN}{name}:1"]
    latest_only = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert [f["FunctionArn"] for f in latest_only] == [f"{ARN}{name}"]
    for entry in [*versions, *listed_all, *latest_only]:
        assert not STATE_FIELDS & set(entry), entry
        assert "RuntimeVersionConfig" not in entry
    got = lam.get_function_configuration(FunctionName=name)
    assert got["State"] == "Active" and "RuntimeVersionConfig" in got


# "Lambda doesn't publish a version if the function's configuration and code haven't changed
# since the last version" (https://docs.aws.amazon.com/lambda/latest/api/
# API_PublishVersion.html); test_publish_version_on_create: repeated_publish_response.
def test_publish_after_a_change_that_changes_nothing(lam) -> None:  # noqa: ANN001
    name = unique("fidv-same")
    create_function(lam, name, Timeout=3)
    first = lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Timeout=7)
    wait_updated(lam, name)
    lam.update_function_configuration(FunctionName=name, Timeout=3)
    wait_updated(lam, name)
    again = lam.publish_version(FunctionName=name)
    assert (again["Version"], again["RevisionId"]) == ("1", first["RevisionId"])
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]


# Publish=True answers the new version, Pending until it settles: CreateFunction under the
# function's own ARN (test_publish_version_on_create: create_response), UpdateFunctionCode
# under the version's (test_lambda_versions_with_code_changes:
# update_lambda_response_with_publish).
def test_publish_true_answers_the_new_version(lam) -> None:  # noqa: ANN001
    name = unique("fidv-pub")
    created = create_function(lam, name, wait=False, Publish=True)
    assert (created["Version"], created["FunctionArn"]) == ("1", f"{ARN}{name}")
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    assert created["StateReason"] == "The function is being created."
    assert "LastUpdateStatus" not in created
    lam.get_waiter("function_active_v2").wait(
        FunctionName=name, Qualifier="1", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    version = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert (version["State"], version["LastUpdateStatus"]) == ("Active", "Successful")
    assert version["RevisionId"] != created["RevisionId"]

    code = make_zip({"app.py": "def handler(event, context):\n    return 2\n"})
    updated = lam.update_function_code(FunctionName=name, ZipFile=code, Publish=True)
    assert (updated["Version"], updated["FunctionArn"]) == ("2", f"{ARN}{name}:2")
    assert (updated["State"], updated["StateReasonCode"]) == ("Pending", "Creating")
    assert "LastUpdateStatus" not in updated
    wait_updated(lam, name, "2")
    version = lam.get_function_configuration(FunctionName=name, Qualifier="2")
    assert (version["State"], version["LastUpdateStatus"]) == ("Active", "Successful")


def test_log_result_has_no_init_start(lam) -> None:  # noqa: ANN001
    name = unique("fidv-tail")
    create_function(lam, name)
    response = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    tail = base64.b64decode(response["LogResult"]).decode()
    assert tail.startswith("START RequestId: "), tail
    assert "INIT_START" not in tail
    assert "REPORT RequestId: " in tail and "Init Duration" in tail


# AccountUsage.TotalCodeSize: "The amount of storage space, in bytes, that's being used by
# deployment packages and layer archives" (https://docs.aws.amazon.com/lambda/latest/api/
# API_AccountUsage.html): published versions count, and so do layer versions.
def test_account_settings_count_versions_and_layers(lam) -> None:  # noqa: ANN001
    def total() -> int:
        return int(lam.get_account_settings()["AccountUsage"]["TotalCodeSize"])

    name = unique("fidv-size")
    before = total()
    create_function(lam, name)
    assert total() == before + len(PY_ECHO)
    lam.publish_version(FunctionName=name)
    assert total() == before + 2 * len(PY_ECHO)
    archive = make_zip({"python/sized.py": "Y = 2\n"})
    layer = unique("fidv-sized")
    lam.publish_layer_version(LayerName=layer, Content={"ZipFile": archive})
    assert total() == before + 2 * len(PY_ECHO) + len(archive)
    lam.delete_layer_version(LayerName=layer, VersionNumber=1)
    assert total() == before + 2 * len(PY_ECHO)


# GetFunctionRecursionConfig/PutFunctionRecursionConfig: Terminate by default
# (https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionRecursionConfig.html;
# TestLambdaRecursion: get_recursion_default_terminate_response, put_recursion_config_response).
def test_recursion_config(lam, raw_lam) -> None:  # noqa: ANN001
    name = unique("fidv-loop")
    create_function(lam, name)
    got = lam.get_function_recursion_config(FunctionName=name)
    assert got["RecursiveLoop"] == "Terminate"
    put = lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    assert put["RecursiveLoop"] == "Allow"
    assert lam.get_function_recursion_config(FunctionName=f"{ARN}{name}")["RecursiveLoop"] == (
        "Allow"
    )
    with pytest.raises(ClientError) as exc:
        raw_lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="InvalidValue")
    assert error(exc)[:2] == (400, "ValidationException")
    with pytest.raises(ClientError) as exc:
        lam.get_function_recursion_config(FunctionName="doesnotexist")
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        f"Function not found: {ARN}doesnotexist",
    )
    lam.delete_function(FunctionName=name)
    create_function(lam, name)
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"


# test_event_source_mapping_exceptions: get_unknown_uuid; test_code_signing_not_found:
# get_function_csc_fnwithoutcsc (an empty answer), get_function_csc_nonexistingfn.
def test_event_source_mapping_and_code_signing_not_found(lam, fn: str) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        lam.get_event_source_mapping(UUID=str(uuid.uuid4()))
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        "The resource you requested does not exist.",
    )
    answer = lam.get_function_code_signing_config(FunctionName=fn)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert set(answer) == {"ResponseMetadata"}
    with pytest.raises(ClientError) as exc:
        lam.get_function_code_signing_config(FunctionName="csc-test-doesnotexist")
    assert error(exc) == (
        404,
        "ResourceNotFoundException",
        f"Function not found: {ARN}csc-test-doesnotexist",
    )
