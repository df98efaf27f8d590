"""Layers and their permissions."""

from __future__ import annotations

import base64

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


def _with_location(call: Call, info: Output) -> Output:
    content = info.get("Content")
    if content:
        digest = base64.b64decode(content["CodeSha256"]).hex()
        content["Location"] = call.code_urls.url_for(call.base_url, digest)
    return info


@operation("PublishLayerVersion")
async def publish_layer_version(call: Call) -> Output:
    info = await run_in_threadpool(call.platform.layers.publish, call.params)
    return _with_location(call, info)


@operation("GetLayerVersion")
async def get_layer_version(call: Call) -> Output:
    p = call.params
    info = await run_in_threadpool(call.platform.layers.get, p["LayerName"], p["VersionNumber"])
    return _with_location(call, info)


@operation("GetLayerVersionByArn")
async def get_layer_version_by_arn(call: Call) -> Output:
    info = await run_in_threadpool(call.platform.layers.get_by_arn, call.params["Arn"])
    return _with_location(call, info)


@operation("ListLayerVersions")
async def list_layer_versions(call: Call) -> Output:
    p = call.params
    result = await run_in_threadpool(
        call.platform.layers.list_versions,
        p["LayerName"],
        p.get("CompatibleRuntime"),
        p.get("CompatibleArchitecture"),
        p.get("Marker"),
        p.get("MaxItems"),
    )
    for item in result["LayerVersions"]:
        item.pop("Content", None)
    return result


@operation("ListLayers")
async def list_layers(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.layers.list_layers,
        p.get("CompatibleRuntime"),
        p.get("CompatibleArchitecture"),
        p.get("Marker"),
        p.get("MaxItems"),
    )


@operation("DeleteLayerVersion")
async def delete_layer_version(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(call.platform.layers.delete, p["LayerName"], p["VersionNumber"])
    return {}


@operation("AddLayerVersionPermission")
async def add_layer_version_permission(call: Call) -> Output:
    return await run_in_threadpool(call.platform.layers.add_permission, call.params)


@operation("GetLayerVersionPolicy")
async def get_layer_version_policy(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.layers.get_policy, p["LayerName"], p["VersionNumber"]
    )


@operation("RemoveLayerVersionPermission")
async def remove_layer_version_permission(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(
        call.platform.layers.remove_permission,
        p["LayerName"],
        p["VersionNumber"],
        p["StatementId"],
        p.get("RevisionId"),
    )
    return {}
