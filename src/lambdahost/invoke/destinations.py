"""Where asynchronous outcomes go: another function (asynchronously), or SQS/SNS/EventBridge
through a configured compatible endpoint."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lambdahost.config import Settings
from lambdahost.invoke.model import InvokeResult

log = logging.getLogger("lambdahost.destinations")

Enqueue = Callable[[str, str | None, bytes, str], None]  # function, qualifier, payload, id


def record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    attempts: int,
    request_payload: bytes,
    result: InvokeResult | None,
    executed_version: str | None,
) -> dict[str, Any]:
    """AWS's invocation record for destinations."""
    stamp = (
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{datetime.now(UTC).microsecond // 1000:03d}Z"
    )
    body: dict[str, Any] = {
        "version": "1.0",
        "timestamp": stamp,
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": _json_or_text(request_payload),
    }
    if result is not None:
        context: dict[str, Any] = {"statusCode": 200, "executedVersion": executed_version}
        if result.function_error:
            context["functionError"] = result.function_error
        body["responseContext"] = context
        body["responsePayload"] = _json_or_text(result.payload)
    return body


class Destinations:
    def __init__(self, settings: Settings, enqueue: Enqueue) -> None:
        self.settings = settings
        self.enqueue = enqueue

    def deliver(
        self, arn: str, message: dict[str, Any] | bytes, attributes: dict[str, str] | None = None
    ) -> None:
        """Deliver synchronously (call from a worker thread). Failures are logged, not raised."""
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        parts = arn.split(":")
        service = parts[2] if len(parts) > 5 else ""
        try:
            if service == "lambda":
                name = parts[6]
                qualifier = parts[7] if len(parts) > 7 else None
                self.enqueue(name, qualifier, body, str(uuid.uuid4()))
            elif service in ("sqs", "sns", "events"):
                self._send_external(service, arn, body, attributes or {})
            else:
                log.error("cannot deliver to unsupported target %s", arn)
        except Exception:
            log.exception("delivery to %s failed", arn)

    def _send_external(
        self, service: str, arn: str, body: bytes, attributes: dict[str, str]
    ) -> None:
        import boto3  # only needed when such targets are configured

        endpoint = self.settings.endpoint_for(service)
        if not endpoint:
            log.error("no %s endpoint configured; dropping delivery to %s", service, arn)
            return
        creds = self.settings.credentials
        client = boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=arn.split(":")[3] or self.settings.region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
        )
        text = body.decode("utf-8", errors="replace")
        message_attributes = {
            k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
        }
        if service == "sqs":
            account, queue = arn.split(":")[4], arn.split(":")[5]
            url = client.get_queue_url(QueueName=queue, QueueOwnerAWSAccountId=account)["QueueUrl"]
            client.send_message(
                QueueUrl=url, MessageBody=text, MessageAttributes=message_attributes
            )
        elif service == "sns":
            client.publish(TopicArn=arn, Message=text, MessageAttributes=message_attributes)
        else:
            client.put_events(
                Entries=[
                    {
                        "Source": "lambda",
                        "DetailType": "Lambda Function Invocation Result",
                        "Detail": text,
                        "EventBusName": arn,
                    }
                ]
            )


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")
