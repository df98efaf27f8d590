"""Layers: the API, and the /opt a function sees."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError
from helpers import create_function, make_zip, unique


def publish(lam, name: str, files: dict[str, str], **kw) -> dict:  # noqa: ANN001
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip(files)}, **kw)


def test_layer_api(lam) -> None:
    name = unique("layer")
    first = publish(
        lam, name, {"python/a.py": "A = 1\n"}, CompatibleRuntimes=["python3.11"], LicenseInfo="MIT"
    )
    second = publish(lam, name, {"python/a.py": "A = 2\n"}, CompatibleArchitectures=["x86_64"])
    assert first["Version"] == 1 and second["Version"] == 2
    assert first["LayerVersionArn"].endswith(f":layer:{name}:1")
    assert first["Content"]["CodeSize"] > 0 and first["Content"]["Location"].startswith("http")
    got = lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert got["LicenseInfo"] == "MIT" and got["CompatibleRuntimes"] == ["python3.11"]
    assert lam.get_layer_version_by_arn(Arn=second["LayerVersionArn"])["Version"] == 2
    versions = lam.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    layers = {layer["LayerName"]: layer for layer in lam.list_layers()["Layers"]}
    assert layers[name]["LatestMatchingVersion"]["Version"] == 2
    filtered = {
        layer["LayerName"] for layer in lam.list_layers(CompatibleRuntime="python3.11")["Layers"]
    }
    assert name in filtered
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName=name, VersionNumber=2)
    assert publish(lam, name, {"x": "1"})["Version"] == 3


def test_layer_permissions(lam) -> None:
    name = unique("layer-perm")
    publish(lam, name, {"x": "1"})
    added = lam.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId="everyone",
        Action="lambda:GetLayerVersion",
        Principal="*",
    )
    assert json.loads(added["Statement"])["Sid"] == "everyone"
    policy = json.loads(lam.get_layer_version_policy(LayerName=name, VersionNumber=1)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["everyone"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.add_layer_version_permission(
            LayerName=name,
            VersionNumber=1,
            StatementId="everyone",
            Action="lambda:GetLayerVersion",
            Principal="*",
        )
    lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="everyone")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)


def test_hostile_layer_is_rejected(lam) -> None:
    with pytest.raises(ClientError) as exc:
        lam.publish_layer_version(
            LayerName=unique("evil"), Content={"ZipFile": make_zip({"../x": "1"})}
        )
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"


def test_functions_see_layers_merged_in_order(lam) -> None:
    base = publish(
        lam,
        unique("base"),
        {
            "python/shared.py": "WHO = 'base'\n",
            "python/only_base.py": "X = 'base-only'\n",
            "nodejs/node_modules/shared/index.js": "module.exports = 'node-base';\n",
        },
    )
    top = publish(
        lam,
        unique("top"),
        {"python/shared.py": "WHO = 'top'\n", "bin/tool": "#!/bin/sh\necho tool\n"},
    )
    name = unique("uses-layers")
    handler = (
        "import shared, only_base, subprocess, os\n"
        "def handler(e, c):\n"
        "    return [shared.WHO, only_base.X, os.access('/opt/python', os.W_OK)]\n"
    )
    create_function(
        lam,
        name,
        make_zip({"app.py": handler}),
        Layers=[base["LayerVersionArn"], top["LayerVersionArn"]],
    )
    config = lam.get_function_configuration(FunctionName=name)
    assert [layer["Arn"] for layer in config["Layers"]] == [
        base["LayerVersionArn"],
        top["LayerVersionArn"],
    ]
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(response["Payload"].read()) == ["top", "base-only", False]
    node = unique("node-layers")
    create_function(
        lam,
        node,
        make_zip({"index.js": "exports.handler = async () => require('shared');\n"}),
        Runtime="nodejs20.x",
        Handler="index.handler",
        Layers=[base["LayerVersionArn"]],
    )
    assert json.loads(lam.invoke(FunctionName=node, Payload=b"{}")["Payload"].read()) == "node-base"
    # A deleted layer version keeps working for functions that already use it.
    lam.delete_layer_version(LayerName=base["LayerArn"], VersionNumber=base["Version"])
    lam.update_function_configuration(FunctionName=name, Timeout=10)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    assert json.loads(response["Payload"].read())[0] == "top"


def test_layer_limits(raw_lam, lam) -> None:
    layer = publish(lam, unique("many"), {"x": "1"})
    arns = [layer["LayerVersionArn"]] * 6
    with pytest.raises(ClientError) as exc:
        create_function(lam, unique("six"), Layers=arns, wait=False)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as exc:
        create_function(
            lam, unique("missing-layer"), wait=False, Layers=[layer["LayerVersionArn"][:-1] + "99"]
        )
    assert exc.value.response["Error"]["Code"] == "InvalidParameterValueException"
