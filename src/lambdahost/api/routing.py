"""Which service a request is for, by protocol, the way AWS's SDKs send it: json by
`X-Amz-Target`, query and ec2 by a form to `/` (the service named by the credential scope, or
by `Version` when unsigned), rest-json by method and path. The signature must then agree
(SigV4 checks the scope names the service it is routed to)."""

from __future__ import annotations

from lambdahost.api.protocols.base import Resolved
from lambdahost.api.protocols.json_rpc import target_prefix
from lambdahost.api.service import ServiceApi
from lambdahost.api.sigv4 import scoped_service
from lambdahost.api.wire import Head


class ServiceRouter:
    def __init__(self, services: list[ServiceApi]) -> None:
        self.default = services[0]
        self._by_target = {
            s.model.metadata["targetPrefix"]: s for s in services if s.kind == "json"
        }
        self._query = [s for s in services if s.kind in ("query", "ec2")]
        self._rest = [s for s in services if s.kind == "rest-json"]

    def route(self, head: Head) -> tuple[ServiceApi, Resolved | None]:
        """The service and, when the head says, the operation. (default, None): no match."""
        prefix = target_prefix(head)
        if prefix is not None and (service := self._by_target.get(prefix)) is not None:
            return service, service.protocol.resolve(head)
        if head.path == "/" and self._query:
            service = self._query_service(head)
            return service, service.protocol.resolve(head)
        for service in self._rest:
            resolved = service.protocol.resolve(head)
            if resolved is not None:
                return service, resolved
        return self.default, None

    def _query_service(self, head: Head) -> ServiceApi:
        scoped = scoped_service(head.headers, head.query)
        version = head.query.get("Version", [None])[0]
        for service in self._query:
            if scoped == service.signing_name or (
                scoped is None and version == service.model.api_version
            ):
                return service
        return self._query[0]
