"""Versions and aliases."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


@operation("PublishVersion")
async def publish_version(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        lambda: call.platform.versions.publish(
            p["FunctionName"],
            code_sha256=p.get("CodeSha256"),
            description=p.get("Description"),
            revision_id=p.get("RevisionId"),
        )
    )


@operation("ListVersionsByFunction")
async def list_versions(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.versions.list, p["FunctionName"], p.get("Marker"), p.get("MaxItems")
    )


@operation("CreateAlias")
async def create_alias(call: Call) -> Output:
    return await run_in_threadpool(call.platform.aliases.create, call.params)


@operation("GetAlias")
async def get_alias(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(call.platform.aliases.get, p["FunctionName"], p["Name"])


@operation("UpdateAlias")
async def update_alias(call: Call) -> Output:
    return await run_in_threadpool(call.platform.aliases.update, call.params)


@operation("DeleteAlias")
async def delete_alias(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(call.platform.aliases.delete, p["FunctionName"], p["Name"])
    return {}


@operation("ListAliases")
async def list_aliases(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.aliases.list,
        p["FunctionName"],
        p.get("FunctionVersion"),
        p.get("Marker"),
        p.get("MaxItems"),
    )
