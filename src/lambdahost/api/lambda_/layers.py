"""Layers and their permissions."""

from __future__ import annotations

import base64

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.layers import LayerService


class LayerHandlers:
    def __init__(self, layers: LayerService, code_urls: CodeUrls) -> None:
        self.layers = layers
        self.code_urls = code_urls

    def _with_location(self, call: Call, info: Output) -> Output:
        content = info.get("Content")
        if content:
            digest = base64.b64decode(content["CodeSha256"]).hex()
            content["Location"] = self.code_urls.url_for(call.base_url, digest)
        return info

    @operation("PublishLayerVersion")
    async def publish_layer_version(self, call: Call) -> Output:
        info = await run_in_threadpool(self.layers.publish, call.params)
        return self._with_location(call, info)

    @operation("GetLayerVersion")
    async def get_layer_version(self, call: Call) -> Output:
        p = call.params
        info = await run_in_threadpool(self.layers.get, p["LayerName"], p["VersionNumber"])
        return self._with_location(call, info)

    @operation("GetLayerVersionByArn")
    async def get_layer_version_by_arn(self, call: Call) -> Output:
        info = await run_in_threadpool(self.layers.get_by_arn, call.params["Arn"])
        return self._with_location(call, info)

    @operation("ListLayerVersions")
    async def list_layer_versions(self, call: Call) -> Output:
        p = call.params
        result = await run_in_threadpool(
            self.layers.list_versions,
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
    async def list_layers(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.layers.list_layers,
            p.get("CompatibleRuntime"),
            p.get("CompatibleArchitecture"),
            p.get("Marker"),
            p.get("MaxItems"),
        )

    @operation("DeleteLayerVersion")
    async def delete_layer_version(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(self.layers.delete, p["LayerName"], p["VersionNumber"])
        return {}

    @operation("AddLayerVersionPermission")
    async def add_layer_version_permission(self, call: Call) -> Output:
        return await run_in_threadpool(self.layers.add_permission, call.params)

    @operation("GetLayerVersionPolicy")
    async def get_layer_version_policy(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(self.layers.get_policy, p["LayerName"], p["VersionNumber"])

    @operation("RemoveLayerVersionPermission")
    async def remove_layer_version_permission(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(
            self.layers.remove_permission,
            p["LayerName"],
            p["VersionNumber"],
            p["StatementId"],
            p.get("RevisionId"),
        )
        return {}
