"""Event invoke configs: how asynchronous invokes retry and where their outcomes go."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.event_configs import EventConfigService


class EventConfigHandlers:
    def __init__(self, event_configs: EventConfigService) -> None:
        self.event_configs = event_configs

    @operation("PutFunctionEventInvokeConfig")
    async def put_event_invoke_config(self, call: Call) -> Output:
        return await run_in_threadpool(self.event_configs.put, call.params)

    @operation("UpdateFunctionEventInvokeConfig")
    async def update_event_invoke_config(self, call: Call) -> Output:
        return await run_in_threadpool(lambda: self.event_configs.put(call.params, merge=True))

    @operation("GetFunctionEventInvokeConfig")
    async def get_event_invoke_config(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.event_configs.get, p["FunctionName"], p.get("Qualifier")
        )

    @operation("DeleteFunctionEventInvokeConfig")
    async def delete_event_invoke_config(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(self.event_configs.delete, p["FunctionName"], p.get("Qualifier"))
        return {}

    @operation("ListFunctionEventInvokeConfigs")
    async def list_event_invoke_configs(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.event_configs.list, p["FunctionName"], p.get("Marker"), p.get("MaxItems")
        )
