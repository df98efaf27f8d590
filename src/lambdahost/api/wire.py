"""What every protocol shares: the request head it routes on, the response it renders, and
botocore's service models, loaded rather than retyped."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape

from lambdahost.errors import ValidationError


@cache
def service_model(name: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


@dataclass(frozen=True)
class Head:
    """A request as read before its body: enough to pick the service and often the operation."""

    method: str
    path: str  # raw (still percent-encoded), as signed
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str = "application/json"


def json_default(value: Any) -> Any:
    """Blobs travel base64-encoded in JSON bodies."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def decode_json_value(member: Shape, value: Any) -> Any:
    """A JSON member as the model types it: blobs arrive base64-encoded."""
    if member.type_name == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValidationError(f"Could not decode base64 value of {member.name}") from None
    if member.type_name == "structure" and isinstance(value, dict):
        members = member.members
        return {
            k: decode_json_value(members[k], v) if k in members else v for k, v in value.items()
        }
    return value
