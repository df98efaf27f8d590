"""The query protocol (STS, and later SQS's older clients and RDS) and its ec2 dialect: a form
(`Action=<Operation>&Version=…&Member.1=…`) in, XML out.

Input members are flattened into dotted keys as botocore's serializers write them: structures
as `Name.Member`, lists as `Name.member.N` (or `Name.N` when flattened, and always in ec2),
maps as `Name.entry.N.key`/`.value` (or `Name.N.<key name>` when flattened). The response is
`<OpResponse><OpResult>…</OpResult><ResponseMetadata>…` (ec2: the members straight under
`<OpResponse>` with a `<requestId>`), and errors are `<ErrorResponse><Error>…` (ec2:
`<Response><Errors><Error>…`)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as _escape

from botocore.model import OperationNotFoundError, ServiceModel, Shape

from lambdahost.api.protocols.base import Resolved, refuse_unbuilt
from lambdahost.api.validation import validate
from lambdahost.api.wire import Head, WireResponse
from lambdahost.errors import LambdaError, ValidationError

Form = dict[str, str]

# SigV4 and authorization failures carry the rest-json names inside lambdahost; query
# services spell them so.
_AUTH_CODES = {
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidClientTokenId",
    "ExpiredTokenException": "ExpiredToken",
    "AccessDeniedException": "AccessDenied",
}
_EC2_AUTH_CODES = {
    **_AUTH_CODES,
    "InvalidSignatureException": "AuthFailure",
    "AccessDeniedException": "UnauthorizedOperation",
}
# Characters XML 1.0 cannot carry even escaped: shown as U+FFFD, as a parser would fail on them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def escape(text: str) -> str:
    return _escape(_NOT_XML.sub("\ufffd", text))


class Query:
    def __init__(
        self, model: ServiceModel, built: frozenset[str], *, validation_code: str | None = None
    ) -> None:
        self.model = model
        self.built = built
        # What the service calls constraint failures (STS: ValidationError).
        self.validation_code = validation_code
        self.ec2 = model.protocol == "ec2"
        self.namespace = model.metadata.get("xmlNamespace", "")

    def resolve(self, head: Head) -> Resolved:
        return Resolved(None)  # the Action is in the form, which may be the body

    def parse(self, resolved: Resolved, head: Head, body: bytes) -> tuple[str, dict[str, Any]]:
        form = _form(head, body)
        action = form.pop("Action", "")
        if not action:
            raise LambdaError("Missing Action", code="MissingAction")
        try:
            operation = self.model.operation_model(action)
        except OperationNotFoundError:
            version = form.get("Version", self.model.api_version)
            raise LambdaError(
                f"Could not find operation {action} for version {version}",
                code="InvalidAction",
            ) from None
        refuse_unbuilt(action, self.built)
        shape = operation.input_shape
        if shape is None:
            return action, {}
        try:
            params = self._structure(shape, form, "")
            validate(shape, params)
        except ValidationError as exc:
            if self.validation_code is None:
                raise
            raise LambdaError(exc.message, code=self.validation_code) from None
        return action, params

    # --- input ------------------------------------------------------------------------------

    def _key(self, name: str, member: Shape) -> str:
        if self.ec2:
            query_name = member.serialization.get("queryName")
            if query_name:
                return str(query_name)
            located = str(member.serialization.get("name", name))
            return located[0].upper() + located[1:]
        return str(member.serialization.get("name", name))

    def _structure(self, shape: Shape, form: Form, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            value = self._value(member, form, prefix + self._key(name, member))
            if value is not None:
                out[name] = value
        return out

    def _value(self, shape: Shape, form: Form, key: str) -> Any:
        kind = shape.type_name
        if kind == "structure":
            if not _has_prefix(form, key + "."):
                return None
            return self._structure(shape, form, key + ".")
        if kind == "list":
            return self._list(shape, form, key)
        if kind == "map":
            return self._map(shape, form, key)
        raw = form.get(key)
        return None if raw is None else _scalar(shape, raw, key)

    def _list(self, shape: Shape, form: Form, key: str) -> list[Any] | None:
        member: Shape = shape.member
        if self.ec2 or shape.serialization.get("flattened"):
            if not self.ec2 and member.serialization.get("name"):
                key = ".".join([*key.split(".")[:-1], member.serialization["name"]])
            item_prefix = key
        else:
            item_prefix = f"{key}.{member.serialization.get('name', 'member')}"
        if form.get(key) == "":  # how botocore sends an empty list
            return []
        items: list[Any] = []
        while True:
            item = self._value(member, form, f"{item_prefix}.{len(items) + 1}")
            if item is None:
                return items or None
            items.append(item)

    def _map(self, shape: Shape, form: Form, key: str) -> dict[str, Any] | None:
        key_shape: Shape = shape.key
        value_shape: Shape = shape.value
        prefix = key if shape.serialization.get("flattened") else f"{key}.entry"
        key_name = key_shape.serialization.get("name", "key")
        value_name = value_shape.serialization.get("name", "value")
        out: dict[str, Any] = {}
        n = 1
        while (k := form.get(f"{prefix}.{n}.{key_name}")) is not None:
            out[k] = self._value(value_shape, form, f"{prefix}.{n}.{value_name}")
            n += 1
        return out or None

    # --- output -----------------------------------------------------------------------------

    def serialize(
        self, operation: str, output: dict[str, Any], request_id: str = ""
    ) -> WireResponse:
        shape = self.model.operation_model(operation).output_shape
        members = "" if shape is None else self._members(shape, output)
        rid = escape(request_id)
        if self.ec2:
            inner = f"<requestId>{rid}</requestId>{members}"
        else:
            wrapper = shape.serialization.get("resultWrapper") if shape is not None else None
            result = f"<{wrapper}>{members}</{wrapper}>" if wrapper else members
            inner = f"{result}<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata>"
        xml = f'<{operation}Response xmlns="{self.namespace}">{inner}</{operation}Response>'
        return WireResponse(200, {}, xml.encode(), "text/xml")

    def _members(self, shape: Shape, value: dict[str, Any]) -> str:
        parts = []
        for name, member in shape.members.items():
            if value.get(name) is not None:
                parts.append(
                    self._element(member.serialization.get("name", name), member, value[name])
                )
        return "".join(parts)

    def _element(self, tag: str, shape: Shape, value: Any) -> str:
        kind = shape.type_name
        if kind == "structure":
            return f"<{tag}>{self._members(shape, value)}</{tag}>"
        if kind == "list":
            member: Shape = shape.member
            if shape.serialization.get("flattened"):
                item_tag = member.serialization.get("name", tag)
                return "".join(self._element(item_tag, member, item) for item in value)
            item_tag = member.serialization.get("name", "item" if self.ec2 else "member")
            items = "".join(self._element(item_tag, member, item) for item in value)
            return f"<{tag}>{items}</{tag}>"
        if kind == "map":
            key_shape: Shape = shape.key
            value_shape: Shape = shape.value
            key_tag = key_shape.serialization.get("name", "key")
            value_tag = value_shape.serialization.get("name", "value")
            entries = [
                self._element(key_tag, key_shape, k) + self._element(value_tag, value_shape, v)
                for k, v in value.items()
            ]
            if shape.serialization.get("flattened"):
                return "".join(f"<{tag}>{entry}</{tag}>" for entry in entries)
            return f"<{tag}>{''.join(f'<entry>{e}</entry>' for e in entries)}</{tag}>"
        return f"<{tag}>{escape(_text(shape, value))}</{tag}>"

    def error(self, error: LambdaError, request_id: str = "") -> WireResponse:
        code = escape((_EC2_AUTH_CODES if self.ec2 else _AUTH_CODES).get(error.code, error.code))
        message = escape(error.message)
        rid = escape(request_id)
        if self.ec2:
            xml = (
                f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
                f"</Error></Errors><RequestID>{rid}</RequestID></Response>"
            )
        else:
            kind = "Receiver" if error.status >= 500 else "Sender"
            xml = (
                f'<ErrorResponse xmlns="{self.namespace}"><Error><Type>{kind}</Type>'
                f"<Code>{code}</Code><Message>{message}</Message></Error>"
                f"<RequestId>{rid}</RequestId></ErrorResponse>"
            )
        return WireResponse(error.status, dict(error.headers), xml.encode(), "text/xml")


def _form(head: Head, body: bytes) -> Form:
    """Query-string and form-body parameters, the body winning (SDKs send one or the other)."""
    pairs = {k: v[0] for k, v in head.query.items()}
    if body:
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        pairs.update({k: v[0] for k, v in parsed.items()})
    return pairs


def _has_prefix(form: Form, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in form)


def _scalar(shape: Shape, raw: str, key: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
    except ValueError:
        raise ValidationError(
            f"1 validation error detected: Value '{raw}' at '{key}' failed to satisfy "
            "constraint: Member must be a number"
        ) from None
    if kind == "boolean":
        return raw.lower() == "true"
    if kind == "blob":
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            raise ValidationError(f"Could not decode base64 value of {key}") from None
    return raw


def _text(shape: Shape, value: Any) -> str:
    kind = shape.type_name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "blob":
        return base64.b64encode(value).decode()
    if kind == "timestamp" and isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return str(value)
