"""The Lambda wire protocol, read from botocore's service model rather than retyped.

Routes come from each operation's `requestUri` and method; request members are pulled from
the URI, query string, headers and JSON body as the model locates them; responses are split
back into status, headers and body the same way."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from lambdahost.control import jsontext
from lambdahost.errors import InvalidRequestContent, LambdaError, ValidationError


@cache
def service_model(name: str = "lambda") -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]
    required_query: tuple[tuple[str, str], ...]  # literal query pairs in the requestUri

    @property
    def name(self) -> str:
        return self.operation.name


def _compile(operation: OperationModel) -> Route:
    uri = operation.http["requestUri"]
    path, _, query = uri.partition("?")
    labels: list[str] = []

    def label(match: re.Match[str]) -> str:
        name = match.group(1).rstrip("+")
        labels.append(name)
        return "(.+)" if match.group(1).endswith("+") else "([^/]+)"

    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(
        label(re.match(r"\{([^}]+)\}", p)) if p.startswith("{") else re.escape(p)  # type: ignore[arg-type]
        for p in parts
    )
    required = tuple(
        (k, v) for k, _, v in (pair.partition("=") for pair in query.split("&") if pair)
    )
    return Route(
        operation, operation.http["method"], re.compile(f"^{regex}/?$"), tuple(labels), required
    )


class Router:
    """Finds the operation for a method + path + query."""

    def __init__(self, model: ServiceModel) -> None:
        routes = [_compile(model.operation_model(n)) for n in model.operation_names]
        # Routes pinned by literal query pairs first, then those with fewer labels.
        routes.sort(key=lambda r: (-len(r.required_query), len(r.labels)))
        self.routes = routes

    def match(
        self, method: str, path: str, query: dict[str, list[str]]
    ) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.method != method:
                continue
            m = route.pattern.match(path)
            if not m:
                continue
            if any(query.get(k, [None])[0] != v for k, v in route.required_query):
                continue
            return route, {
                name: unquote(value) for name, value in zip(route.labels, m.groups(), strict=True)
            }
        return None


def parse_request(
    route: Route,
    labels: dict[str, str],
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes,
) -> dict[str, Any]:
    """Turn a wire request into the operation's input members (botocore names)."""
    shape = route.operation.input_shape
    params: dict[str, Any] = {}
    if shape is None:
        return params
    payload_member = shape.serialization.get("payload")
    body_members: dict[str, Any] = {}
    if payload_member is None and body:
        decoded = _json_body(body)
        if not isinstance(decoded, dict):
            raise ValidationError("Request body must be a JSON object.")
        body_members = decoded
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire_name = member.serialization.get("name", name)
        if location == "uri":
            if wire_name in labels:
                params[name] = _scalar(member, labels[wire_name], wire_name)
        elif location == "querystring":
            if wire_name in query:
                values = query[wire_name]
                params[name] = (
                    values if member.type_name == "list" else _scalar(member, values[0], wire_name)
                )
        elif location == "header":
            value = headers.get(wire_name.lower())
            if value is not None:
                params[name] = _scalar(member, value, wire_name)
        elif name == payload_member:
            params[name] = body if member.type_name == "blob" else _json_body(body or b"{}")
        elif name in body_members:
            params[name] = _decode_body_value(member, body_members[name])
    validate(shape, params)
    return params


def _json_body(body: bytes) -> Any:
    try:
        return jsontext.loads(body)
    except ValueError as exc:  # also too-deep nesting and undecodable bytes
        raise InvalidRequestContent(f"Could not parse request body into json: {exc}") from None


def _scalar(member: Shape, raw: str, wire_name: str) -> Any:
    if member.type_name in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            raise ValidationError(
                f"1 validation error detected: Value '{raw}' at '{wire_name}' failed to satisfy "
                "constraint: Member must be a number"
            ) from None
    if member.type_name == "boolean":
        return raw.lower() == "true"
    return raw


def _decode_body_value(member: Shape, value: Any) -> Any:
    if member.type_name == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValidationError(f"Could not decode base64 value of {member.name}") from None
    if member.type_name == "structure" and isinstance(value, dict):
        members = member.members  # type: ignore[attr-defined]
        return {
            k: _decode_body_value(members[k], v) if k in members else v for k, v in value.items()
        }
    return value


def validate(shape: Shape, params: dict[str, Any]) -> None:
    """Check the model's constraints; raise one ValidationException listing every failure."""
    problems: list[str] = []
    _check_structure(shape, params, "", problems)
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(f"{count} validation {noun} detected: " + "; ".join(problems))


def _check_structure(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"Value at '{path}' failed to satisfy constraint: Member must be an object")
        return
    for required in shape.required_members:  # type: ignore[attr-defined]
        if value.get(required) is None:
            where = _member_path(path, required)
            problems.append(
                f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
            )
    for name, member in shape.members.items():  # type: ignore[attr-defined]
        if name in value and value[name] is not None:
            _check(member, value[name], _member_path(path, name), problems)


_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _member_path(path: str, name: str) -> str:
    lowered = name[0].lower() + name[1:]
    return f"{path}.{lowered}" if path else lowered


def _check(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    kind = shape.type_name
    shown = "*** sensitive ***" if meta.get("sensitive") else value
    if kind == "string":
        if not isinstance(value, str):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must be a string"
            )
            return
        if "enum" in meta and value not in meta["enum"]:
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"enum value set: [{', '.join(meta['enum'])}]"
            )
        if "min" in meta and len(value) < meta["min"]:
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must have "
                f"length greater than or equal to {meta['min']}"
            )
        if "max" in meta and len(value) > meta["max"]:
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must have "
                f"length less than or equal to {meta['max']}"
            )
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy "
                f"regular expression pattern: {meta['pattern']}"
            )
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(
                f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must be a number"
            )
            return
        # The wire type bounds every number, so none overflows a 64-bit column further on.
        low, high = _INT_RANGE[kind]
        low, high = max(low, meta.get("min", low)), min(high, meta.get("max", high))
        if value < low:
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value greater than or equal to {low}"
            )
        if value > high:
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: Member must have "
                f"value less than or equal to {high}"
            )
    elif kind == "blob":
        if not isinstance(value, bytes | bytearray):
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must be base64 data"
            )
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                "Member must be a boolean"
            )
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must be a list"
            )
            return
        if "max" in meta and len(value) > meta["max"]:
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must have length less "
                f"than or equal to {meta['max']}"
            )
        if "min" in meta and len(value) < meta["min"]:
            problems.append(
                f"Value at '{path}' failed to satisfy constraint: Member must have length greater "
                f"than or equal to {meta['min']}"
            )
        for item in value:
            _check(shape.member, item, f"{path}.member", problems)  # type: ignore[attr-defined]
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"Value at '{path}' failed to satisfy constraint: Member must be a map")
            return
        for k, v in value.items():
            _check(shape.key, k, f"{path}.key", problems)  # type: ignore[attr-defined]
            if v is not None:
                _check(shape.value, v, f"{path}.value", problems)  # type: ignore[attr-defined]
    elif kind == "structure":
        _check_structure(shape, value, path, problems)


@cache
def _pattern(java_regex: str) -> re.Pattern[str]:
    translated = java_regex
    if r"\p{" in translated:
        # Python's `re` lacks Java's \p{..} classes; the tag patterns, their only users,
        # mean letters, separators and digits, which \w and \s cover.
        translated = translated.replace(r"[\p{L}\p{Z}\p{N}", r"[\w\s").replace("_.", ".")
    return re.compile(translated, re.DOTALL)


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str = "application/json"


def serialize_response(route: Route, output: dict[str, Any]) -> WireResponse:
    """Split an operation's output members into status, headers and body."""
    op = route.operation
    status = int(op.http.get("responseCode", 200))
    shape = op.output_shape
    if shape is None:
        return WireResponse(status, {}, b"")
    headers: dict[str, str] = {}
    body_members: dict[str, Any] = {}
    payload_member = shape.serialization.get("payload")
    body: bytes | None = None
    content_type = "application/json"
    for name, member in shape.members.items():
        if name not in output or output[name] is None:
            continue
        value = output[name]
        location = member.serialization.get("location")
        if location == "statusCode":
            status = int(value)
        elif location == "header":
            headers[member.serialization.get("name", name)] = str(value)
        elif name == payload_member:
            if member.type_name == "blob":
                body = value if isinstance(value, bytes) else bytes(value)
                content_type = "application/json"
            else:
                body = json.dumps(value).encode()
        else:
            body_members[name] = value
    if body is None:
        body = (
            json.dumps(body_members, default=_json_default).encode()
            if body_members or status != 204
            else b""
        )
    return WireResponse(status, headers, body, content_type)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def error_response(error: LambdaError) -> WireResponse:
    headers = {"x-amzn-ErrorType": error.code, **error.headers}
    return WireResponse(error.status, headers, json.dumps(error.body()).encode())
