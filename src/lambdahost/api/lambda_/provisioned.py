"""Provisioned concurrency configs."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation
from lambdahost.control.lambda_.paging import page


@operation("PutProvisionedConcurrencyConfig")
async def put_provisioned(call: Call) -> Output:
    p = call.params
    platform = call.platform
    requested = p["ProvisionedConcurrentExecutions"]
    stamp = await run_in_threadpool(
        platform.concurrency.put_provisioned, p["FunctionName"], p["Qualifier"], requested
    )
    name = platform.functions.ref(p["FunctionName"]).name
    platform.provisioned.changed(name, p["Qualifier"])
    # As in AWS, a put answers IN_PROGRESS; Get shows READY once the environments are up.
    described = platform.provisioned.describe(name, p["Qualifier"], requested, stamp)
    return {**described, "Status": "IN_PROGRESS"}


@operation("GetProvisionedConcurrencyConfig")
async def get_provisioned(call: Call) -> Output:
    p = call.params
    platform = call.platform
    row = await run_in_threadpool(
        platform.concurrency.get_provisioned, p["FunctionName"], p["Qualifier"]
    )
    return platform.provisioned.describe(
        row.function_name, row.qualifier, row.requested, row.last_modified
    )


@operation("DeleteProvisionedConcurrencyConfig")
async def delete_provisioned(call: Call) -> Output:
    p = call.params
    platform = call.platform
    await run_in_threadpool(
        platform.concurrency.delete_provisioned, p["FunctionName"], p["Qualifier"]
    )
    platform.provisioned.changed(platform.functions.ref(p["FunctionName"]).name, p["Qualifier"])
    return {}


@operation("ListProvisionedConcurrencyConfigs")
async def list_provisioned(call: Call) -> Output:
    p = call.params
    platform = call.platform
    rows = await run_in_threadpool(platform.concurrency.list_provisioned, p["FunctionName"])
    configs = [
        {
            "FunctionArn": platform.functions.arn(row.function_name, row.qualifier),
            **platform.provisioned.describe(
                row.function_name, row.qualifier, row.requested, row.last_modified
            ),
        }
        for row in rows
    ]
    return page(configs, "ProvisionedConcurrencyConfigs", p.get("Marker"), p.get("MaxItems"))
