"""How one AWS service plugs into the front door.

A service is its botocore model plus one handler per implemented operation. The model says
the protocol (rest-json, json, query, ec2), the signing name, the JSON target prefix and the
API version, so the front door routes, authenticates and validates from it; handlers only
map members to the control plane and back. Operations of the model without a handler answer
`NotImplementedException`. docs/architecture.md says how to add a service or an operation.

Handlers are methods of small classes that receive their collaborators in `__init__`, marked
with `@operation("Name")`; `handlers_of(...)` collects them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.model import ServiceModel
from starlette.responses import Response

from lambdahost.api.protocols.base import WireProtocol
from lambdahost.api.protocols.json_rpc import JsonRpc
from lambdahost.api.protocols.query import Query
from lambdahost.api.protocols.rest_json import RestJson
from lambdahost.control.iam import Caller
from lambdahost.control.request_limits import BodyLimit, default_body_limit

Output = dict[str, Any]


@dataclass
class Call:
    """One API call as a handler sees it: the validated input members, the URL the client
    used, who made it (already authorized; the handler's services are the account's that owns
    the resource), and response headers or a whole (streamed) response the handler may set."""

    params: dict[str, Any]
    base_url: str
    caller: Caller
    response_headers: dict[str, str] = field(default_factory=dict)
    raw_response: Response | None = None  # when set, the handler's output is unused


Handler = Callable[[Call], Awaitable[Output]]
H = TypeVar("H", bound=Callable[..., Awaitable[Output]])


def operation(name: str) -> Callable[[H], H]:
    """Mark a handler method as the one serving operation `name` of its service's model."""

    def mark(method: H) -> H:
        method.__operation__ = name  # type: ignore[attr-defined]
        return method

    return mark


def handlers_of(*groups: object) -> dict[str, Handler]:
    """The `@operation` methods of `groups`, bound, by operation name."""
    found: dict[str, Handler] = {}
    for group in groups:
        for attr, member in vars(type(group)).items():
            name = getattr(member, "__operation__", None)
            if name is not None:
                if name in found:
                    raise ValueError(f"two handlers for {name}")
                found[name] = getattr(group, attr)
    return found


@dataclass(frozen=True)
class ServiceApi:
    """One service as the front door serves it."""

    model: ServiceModel
    handlers: dict[str, Handler]
    body_limit: BodyLimit = default_body_limit
    # The code a service gives constraint failures, when not ValidationException.
    validation_code: str | None = None
    protocol: WireProtocol = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.handlers) - set(self.model.operation_names)
        if unknown:
            raise ValueError(f"{self.name} has no operations {sorted(unknown)}")
        object.__setattr__(self, "protocol", self._protocol())
        object.__setattr__(
            self, "not_built", frozenset(self.model.operation_names) - set(self.handlers)
        )

    @property
    def name(self) -> str:
        return str(self.model.service_name)

    @property
    def signing_name(self) -> str:
        return str(self.model.signing_name or self.model.endpoint_prefix)

    @property
    def kind(self) -> str:
        return str(self.model.protocol)

    def _protocol(self) -> WireProtocol:
        kind = self.model.protocol
        built = frozenset(self.handlers)
        if kind == "rest-json":
            return RestJson(self.model, built)
        if kind == "json":
            return JsonRpc(self.model, built, validation_code=self.validation_code)
        if kind in ("query", "ec2"):
            return Query(self.model, built, validation_code=self.validation_code)
        raise ValueError(f"{self.name}: protocol {kind} is not served")
