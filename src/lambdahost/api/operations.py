"""One small handler per implemented operation: wire members in, wire members out.

Handlers translate between the model's member names and the services; rules live in
`control/` and `invoke/`. Operations without a handler answer NotImplementedException."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from lambdahost.api.codeurls import CodeUrls
from lambdahost.platform import Platform

Output = dict[str, Any]


@dataclass
class Call:
    """One API call: the platform, the parsed input, and headers the handler wants to add."""

    platform: Platform
    params: dict[str, Any]
    base_url: str
    code_urls: CodeUrls
    response_headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Output]]
HANDLERS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


@operation("CreateFunction")
async def create_function(call: Call) -> Output:
    return await run_in_threadpool(call.platform.functions.create, call.params)


@operation("GetFunction")
async def get_function(call: Call) -> Output:
    p = call.params
    fv = await run_in_threadpool(call.platform.functions.get, p["FunctionName"], p.get("Qualifier"))
    output: Output = {
        "Configuration": fv.config,
        "Code": {
            "RepositoryType": "S3",
            "Location": call.code_urls.url_for(call.base_url, fv.code_sha256),
        },
    }
    if fv.tags:
        output["Tags"] = fv.tags
    return output


@operation("GetFunctionConfiguration")
async def get_function_configuration(call: Call) -> Output:
    p = call.params
    fv = await run_in_threadpool(call.platform.functions.get, p["FunctionName"], p.get("Qualifier"))
    return fv.config


@operation("ListFunctions")
async def list_functions(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(call.platform.functions.list, p.get("Marker"), p.get("MaxItems"))


@operation("UpdateFunctionCode")
async def update_function_code(call: Call) -> Output:
    return await run_in_threadpool(call.platform.functions.update_code, call.params)


@operation("UpdateFunctionConfiguration")
async def update_function_configuration(call: Call) -> Output:
    return await run_in_threadpool(call.platform.functions.update_configuration, call.params)


@operation("DeleteFunction")
async def delete_function(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(call.platform.functions.delete, p["FunctionName"], p.get("Qualifier"))
    return {"StatusCode": 204}


@operation("TagResource")
async def tag_resource(call: Call) -> Output:
    await run_in_threadpool(call.platform.functions.tag, call.params["Resource"], call.params["Tags"])
    return {}


@operation("UntagResource")
async def untag_resource(call: Call) -> Output:
    p = call.params
    await run_in_threadpool(call.platform.functions.untag, p["Resource"], p["TagKeys"])
    return {}


@operation("ListTags")
async def list_tags(call: Call) -> Output:
    tags = await run_in_threadpool(call.platform.functions.tags_of, call.params["Resource"])
    return {"Tags": tags}


@operation("GetAccountSettings")
async def get_account_settings(call: Call) -> Output:
    count, total = await run_in_threadpool(call.platform.functions.count_and_size)
    limit = call.platform.settings.account_concurrency
    return {
        "AccountLimit": {
            "TotalCodeSize": 80_530_636_800,
            "CodeSizeUnzipped": 262_144_000,
            "CodeSizeZipped": 52_428_800,
            "ConcurrentExecutions": limit,
            "UnreservedConcurrentExecutions": limit,
        },
        "AccountUsage": {"TotalCodeSize": total, "FunctionCount": count},
    }


@operation("Invoke")
async def invoke(call: Call) -> Output:
    p = call.params
    outcome = await call.platform.invoker.invoke(
        p["FunctionName"],
        qualifier=p.get("Qualifier"),
        payload=p.get("Payload") or b"",
        invocation_type=p.get("InvocationType") or "RequestResponse",
        log_type=p.get("LogType"),
        client_context=p.get("ClientContext"),
    )
    call.response_headers["x-amzn-RequestId"] = outcome.request_id
    return {
        "StatusCode": outcome.status,
        "FunctionError": outcome.function_error,
        "LogResult": outcome.log_result,
        "ExecutedVersion": outcome.executed_version,
        "Payload": outcome.payload if outcome.status == 200 else b"",
    }


@operation("InvokeAsync")
async def invoke_async(call: Call) -> Output:
    p = call.params
    outcome = await call.platform.invoker.invoke(
        p["FunctionName"], payload=p.get("InvokeArgs") or b"", invocation_type="Event"
    )
    call.response_headers["x-amzn-RequestId"] = outcome.request_id
    return {"Status": 202}
