"""Event invoke configs: how asynchronous invokes retry and where their outcomes go."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


@operation("PutFunctionEventInvokeConfig")
async def put_event_invoke_config(call: Call) -> Output:
    return await run_in_threadpool(call.platform.event_configs.put, call.params)


@operation("UpdateFunctionEventInvokeConfig")
async def update_event_invoke_config(call: Call) -> Output:
    return await run_in_threadpool(lambda: call.platform.event_configs.put(call.params, merge=True))


@operation("GetFunctionEventInvokeConfig")
async def get_event_invoke_config(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.event_configs.get, p["FunctionName"], p.get("Qualifier")
    )


@operation("DeleteFunctionEventInvokeConfig")
async def delete_event_invoke_config(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(
        call.platform.event_configs.delete, p["FunctionName"], p.get("Qualifier")
    )
    return {}


@operation("ListFunctionEventInvokeConfigs")
async def list_event_invoke_configs(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.event_configs.list, p["FunctionName"], p.get("Marker"), p.get("MaxItems")
    )
