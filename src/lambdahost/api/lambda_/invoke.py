"""Invoke and the legacy InvokeAsync."""

from __future__ import annotations

from lambdahost.api.service import Call, Output, operation
from lambdahost.invoke.service import Invoker


class InvokeHandlers:
    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker

    @operation("Invoke")
    async def invoke(self, call: Call) -> Output:
        p = call.params
        outcome = await self.invoker.invoke(
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
    async def invoke_async(self, call: Call) -> Output:
        p = call.params
        outcome = await self.invoker.invoke(
            p["FunctionName"], payload=p.get("InvokeArgs") or b"", invocation_type="Event"
        )
        call.response_headers["x-amzn-RequestId"] = outcome.request_id
        return {"Status": 202}
