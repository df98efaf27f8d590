"""LayerService on a temporary SQLite, and functions that use layers."""

from __future__ import annotations

import pytest
from helpers import ROLE, make_zip
from lambda_services import Lambda

from lambdahost.errors import InvalidParameterValue, ResourceNotFound

LAYER = "arn:aws:lambda:us-east-1:000000000000:layer:"
CONTENT = make_zip({"python/shared.py": "VALUE = 1\n"})


def publish(services: Lambda, name: str = "lib", **extra: object) -> dict:
    return services.layers.publish({"LayerName": name, "Content": {"ZipFile": CONTENT}, **extra})


def test_versions_count_up_from_one(services: Lambda) -> None:
    one = publish(services, CompatibleRuntimes=["python3.11"], Description="d")
    two = publish(services)
    assert (one["Version"], two["Version"]) == (1, 2)
    assert one["LayerArn"] == LAYER + "lib" and two["LayerVersionArn"] == LAYER + "lib:2"
    assert one["Content"]["CodeSize"] == len(CONTENT)
    assert services.layers.get("lib", 1) == one
    assert services.layers.get_by_arn(LAYER + "lib:1") == one
    assert services.layers.get(LAYER + "lib", 2)["Version"] == 2  # the layer named by its ARN


@pytest.mark.parametrize(
    "change, message",
    [
        ({"Content": {}}, "Please provide a source"),
        ({"Content": {"S3Bucket": "b", "S3Key": "k"}}, "ZipFile only"),
        ({"LayerName": LAYER + "lib:3"}, "must not include a version"),
        ({"LayerName": "bad name"}, "Invalid layer name"),
    ],
)
def test_publish_refusals(services: Lambda, change: dict, message: str) -> None:
    with pytest.raises(InvalidParameterValue, match=message):
        services.layers.publish({"LayerName": "lib", "Content": {"ZipFile": CONTENT}, **change})


def test_compatible_runtimes_take_any_runtime_aws_knows(services: Lambda) -> None:
    # Even runtimes this server does not serve (the model's Runtime enum is checked earlier).
    runtimes = ["ruby2.5", "java21", "nodejs14.x", "python3.11"]
    assert publish(services, CompatibleRuntimes=runtimes)["CompatibleRuntimes"] == runtimes


def test_a_deleted_version_is_gone_and_its_number_not_reused(services: Lambda) -> None:
    publish(services)
    services.layers.delete("lib", 1)
    services.layers.delete("lib", 1)  # idempotent, as in AWS
    with pytest.raises(ResourceNotFound, match=f"Layer version {LAYER}lib:1"):
        services.layers.get("lib", 1)
    assert publish(services)["Version"] == 2


def test_functions_stack_layers_in_order(services: Lambda) -> None:
    first, second = publish(services, "one"), publish(services, "two")
    arns = [second["LayerVersionArn"], first["LayerVersionArn"]]
    base = {
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return e\n"})},
    }
    config = services.functions.create({"FunctionName": "uses", "Layers": arns, **base})
    assert [layer["Arn"] for layer in config["Layers"]] == arns
    assert config["Layers"][0]["CodeSize"] == len(CONTENT)
    version = services.functions.get("uses")
    assert len(version.layer_dirs) == 2
    assert (version.layer_dirs[0] / "python" / "shared.py").is_file()
    for missing in (LAYER + "one:9", LAYER + "nothing:1", "not-an-arn"):
        with pytest.raises(InvalidParameterValue, match="does not exist"):
            services.functions.create({"FunctionName": "broken", "Layers": [missing], **base})
    services.layers.delete("one", 1)
    with pytest.raises(InvalidParameterValue, match="does not exist"):
        services.functions.create({"FunctionName": "late", "Layers": [arns[1]], **base})
