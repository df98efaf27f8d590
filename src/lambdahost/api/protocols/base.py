"""The contract every wire protocol keeps, so the front door treats all services alike.

A protocol object serves one service's botocore model. The front door calls, in order:

- `resolve(head)`: which operation the request head addresses. None means "not this service's
  request" (rest-json: no route matches). A `Resolved` whose `name` is None means the body
  names the operation (query: `Action`); the front door then reads the body with the
  service's default limit.
- `parse(resolved, head, body)`: the operation's name and its input members under botocore's
  names, validated against the model. Raises `LambdaError`s the client should see (unknown
  operation, malformed body, validation), which `error` renders; for an operation of the
  model that is not in `built` it raises `NotImplementedOperation` before validating.
- `serialize(operation, output, request_id)`: the handler's output members as the wire
  response (XML protocols carry the request id in the body too).
- `error(error, request_id)`: any error in this protocol's envelope.

No method touches the network or the control plane: a protocol is pure translation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lambdahost.api.wire import Head, WireResponse
from lambdahost.errors import LambdaError, NotImplementedOperation


def refuse_unbuilt(name: str, built: frozenset[str]) -> None:
    if name not in built:
        raise NotImplementedOperation(f"lambdahost does not implement {name} yet.")


@dataclass(frozen=True)
class Resolved:
    name: str | None  # the operation; None when only the body says
    labels: dict[str, str] = field(default_factory=dict)  # rest-json URI labels


class WireProtocol(Protocol):
    def resolve(self, head: Head) -> Resolved | None: ...

    def parse(self, resolved: Resolved, head: Head, body: bytes) -> tuple[str, dict[str, Any]]: ...

    def serialize(
        self, operation: str, output: dict[str, Any], request_id: str = ""
    ) -> WireResponse: ...

    def error(self, error: LambdaError, request_id: str = "") -> WireResponse: ...
