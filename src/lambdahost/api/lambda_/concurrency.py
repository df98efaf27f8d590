"""Reserved and provisioned concurrency."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.concurrency import ConcurrencyService
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.paging import page
from lambdahost.invoke.provisioned import ProvisionedConcurrency


class ConcurrencyHandlers:
    def __init__(
        self,
        concurrency: ConcurrencyService,
        provisioned: ProvisionedConcurrency,
        functions: FunctionService,
    ) -> None:
        self.concurrency = concurrency
        self.provisioned = provisioned
        self.functions = functions

    @operation("PutFunctionConcurrency")
    async def put_function_concurrency(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(
            self.concurrency.put_reserved, p["FunctionName"], p["ReservedConcurrentExecutions"]
        )

    @operation("GetFunctionConcurrency")
    async def get_function_concurrency(self, call: Call) -> Output:
        return await run_in_threadpool(self.concurrency.get_reserved, call.params["FunctionName"])

    @operation("DeleteFunctionConcurrency")
    async def delete_function_concurrency(self, call: Call) -> Output:
        await run_in_threadpool(self.concurrency.delete_reserved, call.params["FunctionName"])
        return {}

    @operation("PutProvisionedConcurrencyConfig")
    async def put_provisioned(self, call: Call) -> Output:
        p = call.params
        requested = p["ProvisionedConcurrentExecutions"]
        stamp = await run_in_threadpool(
            self.concurrency.put_provisioned, p["FunctionName"], p["Qualifier"], requested
        )
        name = self.functions.ref(p["FunctionName"]).name
        self.provisioned.changed(name, p["Qualifier"])
        # As in AWS, a put answers IN_PROGRESS; Get shows READY once the environments are up.
        described = self.provisioned.describe(name, p["Qualifier"], requested, stamp)
        return {**described, "Status": "IN_PROGRESS"}

    @operation("GetProvisionedConcurrencyConfig")
    async def get_provisioned(self, call: Call) -> Output:
        p = call.params
        row = await run_in_threadpool(
            self.concurrency.get_provisioned, p["FunctionName"], p["Qualifier"]
        )
        return self.provisioned.describe(
            row.function_name, row.qualifier, row.requested, row.last_modified
        )

    @operation("DeleteProvisionedConcurrencyConfig")
    async def delete_provisioned(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(
            self.concurrency.delete_provisioned, p["FunctionName"], p["Qualifier"]
        )
        self.provisioned.changed(self.functions.ref(p["FunctionName"]).name, p["Qualifier"])
        return {}

    @operation("ListProvisionedConcurrencyConfigs")
    async def list_provisioned(self, call: Call) -> Output:
        p = call.params
        rows = await run_in_threadpool(self.concurrency.list_provisioned, p["FunctionName"])
        configs = [
            {
                "FunctionArn": self.functions.arn(row.function_name, row.qualifier),
                **self.provisioned.describe(
                    row.function_name, row.qualifier, row.requested, row.last_modified
                ),
            }
            for row in rows
        ]
        return page(configs, "ProvisionedConcurrencyConfigs", p.get("Marker"), p.get("MaxItems"))
