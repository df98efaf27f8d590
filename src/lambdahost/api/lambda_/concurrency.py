"""Reserved and provisioned concurrency."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


@operation("PutFunctionConcurrency")
async def put_function_concurrency(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.concurrency.put_reserved, p["FunctionName"], p["ReservedConcurrentExecutions"]
    )


@operation("GetFunctionConcurrency")
async def get_function_concurrency(call: Call) -> Output:
    return await run_in_threadpool(
        call.platform.concurrency.get_reserved, call.params["FunctionName"]
    )


@operation("DeleteFunctionConcurrency")
async def delete_function_concurrency(call: Call) -> Output:
    await run_in_threadpool(call.platform.concurrency.delete_reserved, call.params["FunctionName"])
    return {}
