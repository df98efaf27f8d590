"""STS handlers. Every access key is its account's root, so every caller is a root."""

from __future__ import annotations

from lambdahost.api.service import Call, Output, ServiceApi, handlers_of, operation
from lambdahost.api.wire import service_model
from lambdahost.platform import AccountPlane


class StsHandlers:
    @operation("GetCallerIdentity")
    async def get_caller_identity(self, call: Call) -> Output:
        caller = call.caller
        return {"Arn": caller.arn, "UserId": caller.account_id, "Account": caller.account_id}


def sts_api(platform: AccountPlane) -> ServiceApi:
    return ServiceApi(service_model("sts"), handlers_of(StsHandlers()))
