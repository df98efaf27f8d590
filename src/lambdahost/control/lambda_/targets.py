"""Where asynchronous outcomes may be sent: the rule shared by dead-letter queues (a function's
configuration) and destinations (its event-invoke configs)."""

from __future__ import annotations

from lambdahost.config import Settings
from lambdahost.errors import InvalidParameterValue

_SERVICES = {"sqs": "SQS", "sns": "SNS", "events": "EventBridge"}


def check_target(settings: Settings, arn: str) -> None:
    """A destination or dead-letter ARN we can deliver to, or a clear 400."""
    parts = arn.split(":")
    service = parts[2] if len(parts) > 5 and parts[0] == "arn" else ""
    if service == "lambda" and parts[5] == "function":
        return
    if service in _SERVICES:
        if settings.endpoint_for(service):
            return
        raise InvalidParameterValue(
            f"lambdahost cannot deliver to {_SERVICES[service]} target {arn}: no "
            f"{_SERVICES[service]} endpoint is configured (see LAMBDAHOST_"
            f"{service.upper()}_ENDPOINT)."
        )
    raise InvalidParameterValue(f"Unsupported destination or dead-letter target: {arn}")
