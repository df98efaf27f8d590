"""rest-json (Lambda, and later EFS, Signer, Scheduler): the operation from method, path
and query as the model's `requestUri` says; members from the URI, query string, headers and
JSON body as the model locates them; the response split back the same way. Errors are
`x-amzn-ErrorType: <Code>` with a JSON body."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from botocore.model import OperationModel, ServiceModel, Shape

from lambdahost.api.protocols.base import Resolved, refuse_unbuilt
from lambdahost.api.validation import validate
from lambdahost.api.wire import Head, WireResponse, decode_json_value, json_default
from lambdahost.control import jsontext
from lambdahost.errors import InvalidRequestContent, LambdaError, ValidationError


@dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    labels: tuple[str, ...]
    required_query: tuple[tuple[str, str], ...]  # literal query pairs in the requestUri

    @property
    def name(self) -> str:
        return str(self.operation.name)


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
            params[name] = decode_json_value(member, body_members[name])
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
            json.dumps(body_members, default=json_default).encode()
            if body_members or status != 204
            else b""
        )
    return WireResponse(status, headers, body, content_type)


def error_response(error: LambdaError, model: ServiceModel | None = None) -> WireResponse:
    """The error's JSON body under the message key its error shape declares: botocore's
    Lambda model has `Message` for e.g. ResourceNotFoundException and `message` for e.g.
    InvalidParameterValueException, as AWS sends them; `message` for codes not in the model."""
    headers = {"x-amzn-ErrorType": error.code, **error.headers}
    body = error.body()
    key = _message_key(model, error.code) if model is not None else "message"
    if key != "message" and "message" in body:
        body = {(key if k == "message" else k): v for k, v in body.items()}
    return WireResponse(error.status, headers, json.dumps(body).encode())


_MESSAGE_KEYS: dict[tuple[str, str], str] = {}


def _message_key(model: ServiceModel, code: str) -> str:
    cached = _MESSAGE_KEYS.get((model.service_name, code))
    if cached is None:
        shape = next((s for s in model.error_shapes if s.name == code), None)
        members = list(shape.members) if shape is not None else []
        cached = next((m for m in members if m.lower() == "message"), "message")
        _MESSAGE_KEYS[(model.service_name, code)] = cached
    return cached


class RestJson:
    """The rest-json protocol for one service's model."""

    def __init__(self, model: ServiceModel, built: frozenset[str]) -> None:
        self.model = model
        self.router = Router(model)
        self.built = built
        self._routes = {route.name: route for route in self.router.routes}

    def resolve(self, head: Head) -> Resolved | None:
        found = self.router.match(head.method, head.path, head.query)
        return None if found is None else Resolved(found[0].name, found[1])

    def parse(self, resolved: Resolved, head: Head, body: bytes) -> tuple[str, dict[str, Any]]:
        assert resolved.name is not None  # rest-json always knows from the head
        refuse_unbuilt(resolved.name, self.built)
        route = self._routes[resolved.name]
        return route.name, parse_request(route, resolved.labels, head.query, head.headers, body)

    def serialize(
        self, operation: str, output: dict[str, Any], request_id: str = ""
    ) -> WireResponse:
        return serialize_response(self._routes[operation], output)

    def error(self, error: LambdaError, request_id: str = "") -> WireResponse:
        return error_response(error, self.model)
