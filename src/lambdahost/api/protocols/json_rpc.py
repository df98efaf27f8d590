"""The json protocol (CloudWatch Logs, and later SQS, EventBridge, Secrets Manager): every
request is a POST to `/` naming its operation in `X-Amz-Target: <targetPrefix>.<Operation>`,
with the input members as one JSON object. Errors are HTTP 400 (5xx for the server's own)
with `{"__type": "<Code>", "message": …}`."""

from __future__ import annotations

import json
from typing import Any

from botocore.model import OperationNotFoundError, ServiceModel

from lambdahost.api.protocols.base import Resolved, refuse_unbuilt
from lambdahost.api.validation import validate
from lambdahost.api.wire import Head, WireResponse, decode_json_value, json_default
from lambdahost.control import jsontext
from lambdahost.errors import LambdaError, ValidationError

SERIALIZATION = "SerializationException"


def target_prefix(head: Head) -> str | None:
    """The service part of `X-Amz-Target`, or None when the header is absent."""
    target = head.headers.get("x-amz-target")
    return None if target is None else target.rpartition(".")[0]


class JsonRpc:
    def __init__(
        self, model: ServiceModel, built: frozenset[str], *, validation_code: str | None = None
    ) -> None:
        self.model = model
        self.built = built
        self.prefix = model.metadata["targetPrefix"]
        self.content_type = f"application/x-amz-json-{model.metadata.get('jsonVersion', '1.0')}"
        # Some services name constraint failures otherwise (Logs: InvalidParameterException).
        self.validation_code = validation_code

    def resolve(self, head: Head) -> Resolved | None:
        target = head.headers.get("x-amz-target", "")
        prefix, _, name = target.rpartition(".")
        if prefix != self.prefix:
            return None
        return Resolved(name)

    def parse(self, resolved: Resolved, head: Head, body: bytes) -> tuple[str, dict[str, Any]]:
        name = resolved.name or ""
        try:
            operation = self.model.operation_model(name)
        except OperationNotFoundError:
            raise LambdaError(
                f"Unknown {self.model.metadata.get('serviceId', self.prefix)} operation {name}",
                code="UnknownOperationException",
            ) from None
        refuse_unbuilt(name, self.built)
        params = _decode(body)
        shape = operation.input_shape
        if shape is None:
            return name, {}
        members = shape.members
        params = {
            k: decode_json_value(members[k], v) if k in members else v for k, v in params.items()
        }
        try:
            validate(shape, params)
        except ValidationError as exc:
            if self.validation_code is None:
                raise
            raise LambdaError(exc.message, code=self.validation_code) from None
        return name, params

    def serialize(
        self, operation: str, output: dict[str, Any], request_id: str = ""
    ) -> WireResponse:
        body = json.dumps(output, default=json_default).encode()
        return WireResponse(200, {}, body, self.content_type)

    def error(self, error: LambdaError, request_id: str = "") -> WireResponse:
        status = error.status if error.status >= 500 else 400
        body = {"__type": error.code, "message": error.message}
        headers = {"x-amzn-ErrorType": error.code, **error.headers}
        return WireResponse(status, headers, json.dumps(body).encode(), self.content_type)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        params = jsontext.loads(body or b"{}")
    except ValueError:  # also too-deep nesting and undecodable bytes
        raise LambdaError("Could not parse the request body as JSON.", code=SERIALIZATION) from None
    if not isinstance(params, dict):
        raise LambdaError("The request body must be a JSON object.", code=SERIALIZATION)
    return params
