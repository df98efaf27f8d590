"""Function URL configs."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool

from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.urls import UrlService


def _port(call: Call) -> int | None:
    """The port the client reached us on: the URL we hand out must work from there."""
    return urlsplit(call.base_url).port


class UrlHandlers:
    def __init__(self, urls: UrlService) -> None:
        self.urls = urls

    @operation("CreateFunctionUrlConfig")
    async def create_function_url_config(self, call: Call) -> Output:
        return await run_in_threadpool(self.urls.create, call.params, _port(call))

    @operation("GetFunctionUrlConfig")
    async def get_function_url_config(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.urls.get, p["FunctionName"], p.get("Qualifier"), _port(call)
        )

    @operation("UpdateFunctionUrlConfig")
    async def update_function_url_config(self, call: Call) -> Output:
        return await run_in_threadpool(self.urls.update, call.params, _port(call))

    @operation("DeleteFunctionUrlConfig")
    async def delete_function_url_config(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(self.urls.delete, p["FunctionName"], p.get("Qualifier"))
        return {}

    @operation("ListFunctionUrlConfigs")
    async def list_function_url_configs(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.urls.list, p["FunctionName"], p.get("Marker"), p.get("MaxItems"), _port(call)
        )
