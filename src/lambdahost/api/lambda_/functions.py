"""Functions, tags and account settings."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.lambda_.handlers import Call, Output, operation


@operation("CreateFunction")
async def create_function(call: Call) -> Output:
    config = await run_in_threadpool(call.platform.functions.create, call.params)
    return await _publish_if_asked(call, config)


async def _publish_if_asked(call: Call, config: Output) -> Output:
    if not call.params.get("Publish"):
        return config
    return await run_in_threadpool(
        lambda: call.platform.versions.publish(config["FunctionName"], during_change=True)
    )


def _version(call: Call) -> tuple[str, str | None]:
    """The function and the version a (possibly alias) qualifier names."""
    p = call.params
    name = call.platform.functions.ref(p["FunctionName"]).name
    return name, call.platform.aliases.version_for(p["FunctionName"], p.get("Qualifier"))


@operation("GetFunction")
async def get_function(call: Call) -> Output:
    fv = await run_in_threadpool(lambda: call.platform.functions.get(*_version(call)))
    output: Output = {
        "Configuration": fv.config,
        "Code": {
            "RepositoryType": "S3",
            "Location": call.code_urls.url_for(call.base_url, fv.code_sha256),
        },
    }
    if fv.tags:
        output["Tags"] = fv.tags
    concurrency = await run_in_threadpool(
        call.platform.concurrency.get_reserved, fv.config["FunctionName"]
    )
    if concurrency:
        output["Concurrency"] = concurrency
    return output


@operation("GetFunctionConfiguration")
async def get_function_configuration(call: Call) -> Output:
    fv = await run_in_threadpool(lambda: call.platform.functions.get(*_version(call)))
    return fv.config


@operation("ListFunctions")
async def list_functions(call: Call) -> Output:
    p = call.params
    return await run_in_threadpool(
        call.platform.functions.list,
        p.get("Marker"),
        p.get("MaxItems"),
        p.get("FunctionVersion") == "ALL",
    )


@operation("UpdateFunctionCode")
async def update_function_code(call: Call) -> Output:
    config = await run_in_threadpool(call.platform.functions.update_code, call.params)
    return await _publish_if_asked(call, config)


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
    await run_in_threadpool(
        call.platform.functions.tag, call.params["Resource"], call.params["Tags"]
    )
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
            "UnreservedConcurrentExecutions": await run_in_threadpool(
                call.platform.concurrency.unreserved
            ),
        },
        "AccountUsage": {"TotalCodeSize": total, "FunctionCount": count},
    }
