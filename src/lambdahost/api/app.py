"""The HTTP front door: one ASGI app serving every service on one endpoint."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lambdahost.api import sigv4
from lambdahost.api.access_log import AccessLog
from lambdahost.api.bodies import UnverifiedBodies, expected_size, read_body
from lambdahost.api.lambda_ import function_urls
from lambdahost.api.lambda_.codeurls import PREFIX as CODE_PREFIX
from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.api.protocols.base import Resolved
from lambdahost.api.routing import ServiceRouter
from lambdahost.api.service import Call, ServiceApi
from lambdahost.api.services import all_services
from lambdahost.api.wire import Head, WireResponse
from lambdahost.errors import LambdaError, ServiceError
from lambdahost.platform import Platform

log = logging.getLogger("lambdahost.api")


class AuthFailure(LambdaError):
    status = 403


class Gateway:
    """Every API request: the service by protocol, SigV4, the body within the operation's
    limit, the operation's handler, and the answer or error in the service's protocol."""

    def __init__(self, platform: Platform) -> None:
        self.settings = platform.settings
        self.blobs = platform.blobs
        self.code_urls = CodeUrls()
        self.router = ServiceRouter(all_services(platform, self.code_urls))
        creds = platform.settings.credentials
        self._secrets = {creds.access_key_id: creds.secret_access_key}
        self.unverified = UnverifiedBodies()
        self.function_urls = function_urls.FunctionUrlFrontend(
            platform.settings,
            platform.urls,
            platform.permissions,
            platform.invoker,
            self.unverified,
        )

    async def handle(self, request: Request) -> Response:
        # Function URL requests have their own auth rules: route them before SigV4.
        if (url_target := function_urls.target_of(request)) is not None:
            return await self.function_urls.handle(request, url_target)
        request_id = str(uuid.uuid4())
        head = _head(request)
        service, resolved = self.router.route(head)
        try:
            wire, extra = await self._handle(request, head, service, resolved, request_id)
        except LambdaError as exc:
            wire, extra = service.protocol.error(exc, request_id), {}
        except Exception:
            log.exception("internal error in request %s %s", request.method, request.url.path)
            error = ServiceError(
                f"An internal error occurred (request {request_id}); see the server log."
            )
            wire, extra = service.protocol.error(error, request_id), {}
        if isinstance(wire, Response):  # a handler's own (streamed) response
            wire.headers.update({"x-amzn-RequestId": request_id, **extra})
            return wire
        headers = {"x-amzn-RequestId": request_id, **wire.headers, **extra}
        return Response(wire.body, wire.status, headers=headers, media_type=wire.content_type)

    async def _handle(
        self,
        request: Request,
        head: Head,
        service: ServiceApi,
        resolved: Resolved | None,
        request_id: str,
    ) -> tuple[WireResponse | Response, dict[str, str]]:
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        # The signed head first: nothing of the body is read for a request that fails it.
        pending = self._begin_auth(request, head.path, query_string, service.signing_name)
        limit, too_large = service.body_limit(resolved.name if resolved else None)
        body = await self._read_body(request, pending, limit, too_large)
        if resolved is None:
            raise LambdaError(
                f"No {service.model.metadata['serviceId']} operation matches "
                f"{request.method} {head.path}",
                code="UnknownOperationException",
                status=404,
            )
        name, params = service.protocol.parse(resolved, head, body)
        handler = service.handlers[name]  # parse refuses operations without one
        call = Call(params, _base_url(request))
        output = await handler(call)
        if call.raw_response is not None:
            return call.raw_response, call.response_headers
        return service.protocol.serialize(name, output, request_id), call.response_headers

    def _begin_auth(
        self, request: Request, path: str, query: str, service: str
    ) -> sigv4.PendingSignature | None:
        if not self.settings.auth:
            return None
        head = sigv4.SignedRequest(
            method=request.method,
            path=path,
            query=query,
            headers=[
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
            ],
        )
        try:
            return sigv4.begin(
                head, self._secrets.get, region=self.settings.region, service=service
            )
        except sigv4.AuthError as exc:
            raise AuthFailure(exc.message, code=exc.code, status=exc.status) from None

    async def _read_body(
        self,
        request: Request,
        pending: sigv4.PendingSignature | None,
        limit: int,
        too_large: Callable[[], LambdaError],
    ) -> bytes:
        if pending is None:  # authentication is off
            return (await read_body(request, limit, too_large)).data
        # Until the signature is proven, the body counts against the shared bound.
        async with self.unverified.admit(expected_size(request, limit)):
            body = await read_body(request, limit, too_large, digest=pending.needs_body_hash)
            try:
                pending.finish(body.sha256)
            except sigv4.AuthError as exc:
                raise AuthFailure(exc.message, code=exc.code, status=exc.status) from None
        return body.data  # joined only now that it is proven

    async def download_code(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        q = request.query_params
        if not self.code_urls.valid(digest, q.get("expires", ""), q.get("signature", "")):
            return Response(
                b"<Error><Code>AccessDenied</Code><Message>Request has expired or the signature "
                b"does not match</Message></Error>",
                403,
                media_type="application/xml",
            )
        path = self.blobs.path(digest)
        if not path.exists():
            return Response(
                b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml"
            )
        return Response(path.read_bytes(), media_type="application/zip")


def _head(request: Request) -> Head:
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    return Head(
        request.method,
        raw_path,
        parse_qs(query_string, keep_blank_values=True),
        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]},
    )


def _base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


class FrontDoor:
    """The ASGI entry point. API requests go straight to `Gateway.handle`, which renders
    every error itself, skipping Starlette's router and middleware on the hot path;
    Starlette serves the rest (lifespan, code downloads)."""

    def __init__(self, api: Gateway, app: Starlette) -> None:
        self.api = api
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(CODE_PREFIX):
            response = await self.api.handle(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(platform: Platform, access_log: bool = False) -> ASGIApp:
    """The server's ASGI app; `access_log` wraps it in `AccessLog` (nothing is paid when off)."""
    api = Gateway(platform)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    routes = [Route(CODE_PREFIX + "{digest:str}", api.download_code, methods=["GET"])]
    door = FrontDoor(api, Starlette(routes=routes, lifespan=lifespan))
    return AccessLog(door) if access_log else door
