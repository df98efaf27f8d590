"""The HTTP front door: one ASGI app for the Lambda REST API (and later Logs and STS)."""

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
from starlette.types import Receive, Scope, Send

from lambdahost.api import logs, sigv4, sts
from lambdahost.api.bodies import UnverifiedBodies, expected_size, read_body
from lambdahost.api.lambda_ import function_urls
from lambdahost.api.lambda_.codeurls import PREFIX as CODE_PREFIX
from lambdahost.api.lambda_.codeurls import CodeUrls
from lambdahost.api.lambda_.handlers import Call, load_all
from lambdahost.api.model import (
    Router,
    WireResponse,
    error_response,
    parse_request,
    serialize_response,
    service_model,
)
from lambdahost.control.request_limits import body_limit
from lambdahost.errors import LambdaError, NotImplementedOperation, ServiceError
from lambdahost.platform import Platform

log = logging.getLogger("lambdahost.api")


class AuthFailure(LambdaError):
    status = 403


class LambdaApi:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.router = Router(service_model("lambda"))
        self.code_urls = CodeUrls()
        self.handlers = load_all()
        creds = platform.settings.credentials
        self._secrets = {creds.access_key_id: creds.secret_access_key}
        self.unverified = UnverifiedBodies()
        self.function_urls = function_urls.FunctionUrlFrontend(platform, self.unverified)

    async def handle(self, request: Request) -> Response:
        # Function URL requests have their own auth rules: route them before SigV4.
        if (url_target := function_urls.target_of(request)) is not None:
            return await self.function_urls.handle(request, url_target)
        request_id = str(uuid.uuid4())
        service = _service_of(request)
        try:
            wire, extra = await self._handle(request, service)
        except LambdaError as exc:
            wire, extra = _render_error(service, exc), {}
        except Exception:
            log.exception("internal error in request %s %s", request.method, request.url.path)
            wire = error_response(
                ServiceError(
                    f"An internal error occurred (request {request_id}); see the server log."
                )
            )
            extra = {}
        if isinstance(wire, Response):  # a handler's own (streamed) response
            wire.headers.update({"x-amzn-RequestId": request_id, **extra})
            return wire
        headers = {"x-amzn-RequestId": request_id, **wire.headers, **extra}
        return Response(wire.body, wire.status, headers=headers, media_type=wire.content_type)

    async def _handle(
        self, request: Request, service: str
    ) -> tuple[WireResponse | Response, dict[str, str]]:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        # The signed head first: nothing of the body is read for a request that fails it.
        pending = self._begin_auth(request, raw_path, query_string, service)
        target = request.headers.get("x-amz-target", "")
        query = parse_qs(query_string, keep_blank_values=True)
        found = None
        if service == "logs":
            operation: str | None = target[len(logs.TARGET_PREFIX) :]
        elif service == "sts":
            operation = "GetCallerIdentity"
        else:
            found = self.router.match(request.method, raw_path, query)
            operation = found[0].name if found is not None else None
        body = await self._read_body(request, pending, *body_limit(service, operation))
        if service == "logs":
            return await logs.handle(self.platform, target[len(logs.TARGET_PREFIX) :], body), {}
        if service == "sts":
            return await sts.handle(self.platform, body), {}
        if found is None:
            raise LambdaError(
                f"No Lambda operation matches {request.method} {raw_path}",
                code="UnknownOperationException",
                status=404,
            )
        route, labels = found
        handler = self.handlers.get(route.name)
        if handler is None:
            raise NotImplementedOperation(f"lambdahost does not implement {route.name} yet.")
        headers = {k.lower(): v for k, v in request.headers.items()}
        params = parse_request(route, labels, query, headers, body)
        call = Call(self.platform, params, _base_url(request), self.code_urls)
        output = await handler(call)
        if call.raw_response is not None:
            return call.raw_response, call.response_headers
        return serialize_response(route, output), call.response_headers

    def _begin_auth(
        self, request: Request, path: str, query: str, service: str
    ) -> sigv4.PendingSignature | None:
        if not self.platform.settings.auth:
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
                head, self._secrets.get, region=self.platform.settings.region, service=service
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
        path = self.platform.blobs.path(digest)
        if not path.exists():
            return Response(
                b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml"
            )
        return Response(path.read_bytes(), media_type="application/zip")


def _service_of(request: Request) -> str:
    """Which service a request is for, from what routes it (its signature must agree)."""
    if request.headers.get("x-amz-target", "").startswith(logs.TARGET_PREFIX):
        return "logs"
    path = request.scope.get("raw_path", b"") or request.url.path.encode()
    if path == b"/" and request.method == "POST":
        return "sts"
    return "lambda"


def _render_error(service: str, error: LambdaError) -> WireResponse:
    """An error in the envelope of the protocol the client speaks."""
    if service == "logs":
        return logs.json_error(error)
    if service == "sts":
        code = _QUERY_AUTH_CODES.get(error.code, error.code)
        return sts.query_error(code, error.message, error.status)
    return error_response(error)


# The query protocol (STS) names the authentication failures differently.
_QUERY_AUTH_CODES = {
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidClientTokenId",
}


def _base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


class FrontDoor:
    """The ASGI entry point. API requests go straight to `LambdaApi.handle`, which renders
    every error itself, skipping Starlette's router and middleware on the hot path;
    Starlette serves the rest (lifespan, code downloads)."""

    def __init__(self, api: LambdaApi, app: Starlette) -> None:
        self.api = api
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(CODE_PREFIX):
            response = await self.api.handle(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(platform: Platform) -> FrontDoor:
    api = LambdaApi(platform)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    routes = [Route(CODE_PREFIX + "{digest:str}", api.download_code, methods=["GET"])]
    return FrontDoor(api, Starlette(routes=routes, lifespan=lifespan))
