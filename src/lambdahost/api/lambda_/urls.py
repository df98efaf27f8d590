"""Function URL configs."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


def _port(call: Call) -> int | None:
    """The port the client reached us on: the URL we hand out must work from there."""
    return urlsplit(call.base_url).port


@operation("CreateFunctionUrlConfig")
async def create_function_url_config(call: Call) -> Output:
    return await run_in_threadpool(call.platform.urls.create, call.params, _port(call))


@operation("GetFunctionUrlConfig")
async def get_function_url_config(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.urls.get, p["FunctionName"], p.get("Qualifier"), _port(call)
    )


@operation("UpdateFunctionUrlConfig")
async def update_function_url_config(call: Call) -> Output:
    return await run_in_threadpool(call.platform.urls.update, call.params, _port(call))


@operation("DeleteFunctionUrlConfig")
async def delete_function_url_config(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(call.platform.urls.delete, p["FunctionName"], p.get("Qualifier"))
    return {}


@operation("ListFunctionUrlConfigs")
async def list_function_url_configs(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.urls.list, p["FunctionName"], p.get("Marker"), p.get("MaxItems"), _port(call)
    )
