"""CloudWatch Logs handlers: the wire members go to `control/logs` as they are (its methods
take and return the camelCase members), off the event loop because the store is synchronous."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from lambdahost.api.service import Call, Output, ServiceApi, handlers_of, operation
from lambdahost.api.wire import service_model
from lambdahost.control.logs.service import LogService
from lambdahost.control.request_limits import logs_body_limit
from lambdahost.platform import AccountPlane


class LogHandlers:
    def __init__(self, logs: LogService) -> None:
        self.logs = logs

    @operation("CreateLogGroup")
    async def create_log_group(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.create_log_group, call.params)

    @operation("DeleteLogGroup")
    async def delete_log_group(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.delete_log_group, call.params)

    @operation("DescribeLogGroups")
    async def describe_log_groups(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.describe_log_groups, call.params)

    @operation("PutRetentionPolicy")
    async def put_retention_policy(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.put_retention_policy, call.params)

    @operation("DeleteRetentionPolicy")
    async def delete_retention_policy(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.delete_retention_policy, call.params)

    @operation("CreateLogStream")
    async def create_log_stream(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.create_log_stream, call.params)

    @operation("DeleteLogStream")
    async def delete_log_stream(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.delete_log_stream, call.params)

    @operation("DescribeLogStreams")
    async def describe_log_streams(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.describe_log_streams, call.params)

    @operation("PutLogEvents")
    async def put_log_events(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.put_log_events, call.params)

    @operation("GetLogEvents")
    async def get_log_events(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.get_log_events, call.params)

    @operation("FilterLogEvents")
    async def filter_log_events(self, call: Call) -> Output:
        return await run_in_threadpool(self.logs.filter_log_events, call.params)


def logs_api(platform: AccountPlane) -> ServiceApi:
    settings = platform.settings
    logs = LogService(platform.db, platform.logs, settings.region, settings.account_id)
    return ServiceApi(
        service_model("logs"),
        handlers_of(LogHandlers(logs)),
        body_limit=logs_body_limit,
        validation_code="InvalidParameterException",
    )
