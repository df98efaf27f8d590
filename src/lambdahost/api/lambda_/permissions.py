"""Resource-based policies on functions."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.service import Call, Output, operation
from lambdahost.control.lambda_.permissions import PermissionService


class PermissionHandlers:
    def __init__(self, permissions: PermissionService) -> None:
        self.permissions = permissions

    @operation("AddPermission")
    async def add_permission(self, call: Call) -> Output:
        return await run_in_threadpool(self.permissions.add, call.params)

    @operation("GetPolicy")
    async def get_policy(self, call: Call) -> Output:
        p = call.params
        return await run_in_threadpool(self.permissions.get, p["FunctionName"], p.get("Qualifier"))

    @operation("RemovePermission")
    async def remove_permission(self, call: Call) -> Output:
        p = call.params
        await run_in_threadpool(
            self.permissions.remove,
            p["FunctionName"],
            p["StatementId"],
            p.get("Qualifier"),
            p.get("RevisionId"),
        )
        return {}
