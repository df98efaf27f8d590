"""Resource-based policies on functions."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


@operation("AddPermission")
async def add_permission(call: Call) -> Output:
    return await run_in_threadpool(call.platform.permissions.add, call.params)


@operation("GetPolicy")
async def get_policy(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.permissions.get, p["FunctionName"], p.get("Qualifier")
    )


@operation("RemovePermission")
async def remove_permission(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(
        call.platform.permissions.remove,
        p["FunctionName"],
        p["StatementId"],
        p.get("Qualifier"),
        p.get("RevisionId"),
    )
    return {}
