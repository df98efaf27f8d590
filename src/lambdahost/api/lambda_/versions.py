"""Versions and aliases."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.aliases import AliasService
from lambdahost.control.lambda_.versions import VersionService


class VersionHandlers:
    def __init__(self, versions: VersionService, aliases: AliasService) -> None:
        self.versions = versions
        self.aliases = aliases

    @operation("PublishVersion")
    async def publish_version(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            lambda: self.versions.publish(
                p["FunctionName"],
                code_sha256=p.get("CodeSha256"),
                description=p.get("Description"),
                revision_id=p.get("RevisionId"),
            )
        )

    @operation("ListVersionsByFunction")
    async def list_versions(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.versions.list, p["FunctionName"], p.get("Marker"), p.get("MaxItems")
        )

    @operation("CreateAlias")
    async def create_alias(self, call: Call) -> Output:
        return await run_in_threadpool(self.aliases.create, call.params)

    @operation("GetAlias")
    async def get_alias(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(self.aliases.get, p["FunctionName"], p["Name"])

    @operation("UpdateAlias")
    async def update_alias(self, call: Call) -> Output:
        return await run_in_threadpool(self.aliases.update, call.params)

    @operation("DeleteAlias")
    async def delete_alias(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(self.aliases.delete, p["FunctionName"], p["Name"])
        return {}

    @operation("ListAliases")
    async def list_aliases(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.aliases.list,
            p["FunctionName"],
            p.get("FunctionVersion"),
            p.get("Marker"),
            p.get("MaxItems"),
        )
