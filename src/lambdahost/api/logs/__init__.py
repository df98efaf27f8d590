"""CloudWatch Logs (JSON 1.1, `X-Amz-Target: Logs_20140328.<Operation>`).

Errors go out as botocore's json protocol reads them: HTTP 400 and
`{"__type": "<Code>", "message": "..."}`."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any

from botocore.model import OperationNotFoundError

from lambdahost.api.model import WireResponse, service_model, validate
from lambdahost.control import jsontext
from lambdahost.control.logs.service import OPERATIONS, LogService
from lambdahost.control.logs.syntax import InvalidParameter
from lambdahost.errors import LambdaError, NotImplementedOperation, ServiceError, ValidationError
from lambdahost.platform import Platform

TARGET_PREFIX = "Logs_20140328."
CONTENT_TYPE = "application/x-amz-json-1.1"
SERIALIZATION = "SerializationException"
log = logging.getLogger("lambdahost.api.logs")
_services: weakref.WeakKeyDictionary[Platform, LogService] = weakref.WeakKeyDictionary()


def log_service(platform: Platform) -> LogService:
    service = _services.get(platform)
    if service is None:
        settings = platform.settings
        service = LogService(platform.db, platform.logs, settings.region, settings.account_id)
        _services[platform] = service
    return service


async def handle(platform: Platform, operation: str, body: bytes) -> WireResponse:
    try:
        output = await _dispatch(platform, operation, body)
    except LambdaError as exc:
        return json_error(exc)
    except Exception:
        log.exception("internal error in Logs %s", operation)
        return json_error(ServiceError("An internal error occurred; see the server log."))
    return WireResponse(200, {}, json.dumps(output).encode(), CONTENT_TYPE)


async def _dispatch(platform: Platform, operation: str, body: bytes) -> dict[str, Any]:
    try:
        model = service_model("logs").operation_model(operation)
    except OperationNotFoundError:
        raise LambdaError(
            f"Unknown CloudWatch Logs operation {operation}", code="UnknownOperationException"
        ) from None
    run = OPERATIONS.get(operation)
    if run is None:
        raise NotImplementedOperation(f"lambdahost does not implement Logs {operation}.")
    params = _decode(body)
    if model.input_shape is not None:
        try:
            validate(model.input_shape, params)
        except ValidationError as exc:
            # CloudWatch Logs names constraint failures InvalidParameterException.
            raise InvalidParameter(exc.message) from None
    # The store is synchronous (SQLAlchemy): keep it off the event loop.
    return await asyncio.to_thread(run, log_service(platform), params)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        params = jsontext.loads(body or b"{}")
    except ValueError:  # also too-deep nesting
        raise LambdaError(
            "Could not parse the request body as JSON.", code="SerializationException"
        ) from None
    if not isinstance(params, dict):
        raise LambdaError("The request body must be a JSON object.", code=SERIALIZATION)
    return params


def json_error(error: LambdaError) -> WireResponse:
    status = error.status if error.status >= 500 else 400
    body = {"__type": error.code, "message": error.message}
    return WireResponse(
        status, {"x-amzn-ErrorType": error.code}, json.dumps(body).encode(), CONTENT_TYPE
    )
