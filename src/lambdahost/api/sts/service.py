"""STS handlers: who is calling, and temporary credentials for a role (`control/sts`)."""

from __future__ import annotations

from lambdahost.api.service import Call, Output, ServiceApi, handlers_of, operation
from lambdahost.api.wire import service_model
from lambdahost.control.sts.sessions import Sessions
from lambdahost.platform import AccountPlane


class StsHandlers:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    @operation("GetCallerIdentity")
    async def get_caller_identity(self, call: Call) -> Output:
        caller = call.caller
        return {"Arn": caller.arn, "UserId": caller.user_id, "Account": caller.account_id}

    @operation("AssumeRole")
    async def assume_role(self, call: Call) -> Output:
        # Sealing a token is microseconds and writes nothing: no thread needed.
        return self.sessions.assume_role(call.caller, call.params)


def sts_api(platform: AccountPlane) -> ServiceApi:
    return ServiceApi(
        service_model("sts"),
        handlers_of(StsHandlers(platform.sessions)),
        validation_code="ValidationError",
    )
