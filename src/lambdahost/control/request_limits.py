"""How large a request body each operation takes: the services' documented quotas, with the
errors AWS answers past them. The body is cut off there, before it is parsed. Each service
registers its own limit with the front door (`api/service.ServiceApi.body_limit`)."""

from __future__ import annotations

from collections.abc import Callable

from lambdahost.control.lambda_ import rules
from lambdahost.errors import LambdaError, RequestTooLarge

# The limit for an operation (None: the body names it, or no such operation) and the error.
BodyLimit = Callable[[str | None], tuple[int, Callable[[], LambdaError]]]

# Invoke's request payload quota (synchronous; the invoker holds asynchronous ones to 1 MB).
INVOKE_MAX = 6 * 1024 * 1024
# Everything else is a small document: configuration, policy, tags. CloudWatch Logs'
# PutLogEvents carries up to 1 MB of events, which JSON escaping can grow several times.
DEFAULT_MAX = 1024 * 1024
PUT_LOG_EVENTS_MAX = 8 * 1024 * 1024
# The direct upload of a 50 MB zip, base64-encoded in a JSON body.
_CODE_OPERATIONS = frozenset(("CreateFunction", "UpdateFunctionCode", "PublishLayerVersion"))
_INVOKE_OPERATIONS = frozenset(("Invoke", "InvokeAsync", "InvokeWithResponseStream"))


def default_body_limit(
    operation: str | None, limit: int = DEFAULT_MAX
) -> tuple[int, Callable[[], LambdaError]]:
    name = operation or "requested"
    return limit, lambda: rules.EntityTooLarge(
        f"Request must be smaller than {limit} bytes for the {name} operation"
    )


def lambda_body_limit(operation: str | None) -> tuple[int, Callable[[], LambdaError]]:
    if operation in _INVOKE_OPERATIONS:
        return INVOKE_MAX, lambda: RequestTooLarge(
            f"Request must be smaller than {INVOKE_MAX} bytes for the InvokeFunction operation"
        )
    if operation in _CODE_OPERATIONS:
        return default_body_limit(operation, rules.REQUEST_MAX)
    return default_body_limit(operation)


def logs_body_limit(operation: str | None) -> tuple[int, Callable[[], LambdaError]]:
    if operation == "PutLogEvents":
        return default_body_limit(operation, PUT_LOG_EVENTS_MAX)
    return default_body_limit(operation)
