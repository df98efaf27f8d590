"""How large a request body each operation takes: Lambda's documented quotas, with the
errors AWS answers past them. The body is cut off there, before it is parsed."""

from __future__ import annotations

from collections.abc import Callable

from lambdahost.control.lambda_ import rules
from lambdahost.errors import LambdaError, RequestTooLarge

__all__ = ["body_limit"]

# Invoke's request payload quota (synchronous; the invoker holds asynchronous ones to 1 MB).
INVOKE_MAX = 6 * 1024 * 1024
# Everything else is a small JSON document: configuration, policy, tags. CloudWatch Logs'
# PutLogEvents carries up to 1 MB of events, which JSON escaping can grow several times.
DEFAULT_MAX = 1024 * 1024
PUT_LOG_EVENTS_MAX = 8 * 1024 * 1024
# The direct upload of a 50 MB zip, base64-encoded in a JSON body.
_CODE_OPERATIONS = frozenset(("CreateFunction", "UpdateFunctionCode", "PublishLayerVersion"))
_INVOKE_OPERATIONS = frozenset(("Invoke", "InvokeAsync", "InvokeWithResponseStream"))


def body_limit(service: str, operation: str | None) -> tuple[int, Callable[[], LambdaError]]:
    """The byte limit for `operation`'s body (None: not an operation we know) and the error
    past it."""
    if service == "lambda" and operation in _INVOKE_OPERATIONS:
        return INVOKE_MAX, lambda: RequestTooLarge(
            f"Request must be smaller than {INVOKE_MAX} bytes for the InvokeFunction operation"
        )
    if service == "lambda" and operation in _CODE_OPERATIONS:
        limit = rules.REQUEST_MAX
    elif service == "logs" and operation == "PutLogEvents":
        limit = PUT_LOG_EVENTS_MAX
    else:
        limit = DEFAULT_MAX
    name = operation or "requested"
    return limit, lambda: rules.EntityTooLarge(
        f"Request must be smaller than {limit} bytes for the {name} operation"
    )
