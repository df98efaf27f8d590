"""STS handlers. Every caller signs with the root credentials, so every caller is the
account's root."""

from __future__ import annotations

from lambdahost.api.service import Call, Output, ServiceApi, handlers_of, operation
from lambdahost.api.wire import service_model
from lambdahost.platform import Platform


class StsHandlers:
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id

    @operation("GetCallerIdentity")
    async def get_caller_identity(self, call: Call) -> Output:
        account = self.account_id
        return {"Arn": f"arn:aws:iam::{account}:root", "UserId": account, "Account": account}


def sts_api(platform: Platform) -> ServiceApi:
    return ServiceApi(service_model("sts"), handlers_of(StsHandlers(platform.settings.account_id)))
