"""The HTTP front door: one ASGI app for the Lambda REST API (and later Logs and STS)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lambdahost.api import function_urls, logs, sigv4, sts
from lambdahost.api.codeurls import PREFIX as CODE_PREFIX
from lambdahost.api.codeurls import CodeUrls
from lambdahost.api.handlers import Call, load_all
from lambdahost.api.model import (
    Router,
    WireResponse,
    error_response,
    parse_request,
    serialize_response,
    service_model,
)
from lambdahost.control import rules
from lambdahost.errors import LambdaError, NotImplementedOperation, ServiceError
from lambdahost.platform import Platform

log = logging.getLogger("lambdahost.api")
BODY_MAX = rules.REQUEST_MAX + 1024 * 1024


class AuthFailure(LambdaError):
    status = 403


class LambdaApi:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.router = Router(service_model("lambda"))
        self.code_urls = CodeUrls()
        self.handlers = load_all()
        self.function_urls = function_urls.FunctionUrlFrontend(platform)
        creds = platform.settings.credentials
        self._secrets = {creds.access_key_id: creds.secret_access_key}

    async def handle(self, request: Request) -> Response:
        # Function URL requests have their own auth rules: route them before SigV4.
        if (url_target := function_urls.target_of(request)) is not None:
            return await self.function_urls.handle(request, url_target)
        request_id = str(uuid.uuid4())
        try:
            wire, extra = await self._handle(request)
        except LambdaError as exc:
            wire, extra = error_response(exc), {}
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

    async def _handle(self, request: Request) -> tuple[WireResponse | Response, dict[str, str]]:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        body = await _read_body(request)
        if self.platform.settings.auth:
            self._authenticate(request, raw_path, query_string, body)
        target = request.headers.get("x-amz-target", "")
        if target.startswith(logs.TARGET_PREFIX):
            return await logs.handle(self.platform, target[len(logs.TARGET_PREFIX) :], body), {}
        if raw_path == "/" and request.method == "POST":
            return await sts.handle(self.platform, body), {}
        query = parse_qs(query_string, keep_blank_values=True)
        found = self.router.match(request.method, raw_path, query)
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

    def _authenticate(self, request: Request, path: str, query: str, body: bytes) -> None:
        signed = sigv4.SignedRequest(
            method=request.method,
            path=path,
            query=query,
            headers=[
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
            ],
            body=body,
        )
        try:
            sigv4.verify(signed, self._secrets.get)
        except sigv4.AuthError as exc:
            raise AuthFailure(exc.message, code=exc.code, status=exc.status) from None

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


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > BODY_MAX:
            raise rules.EntityTooLarge(
                f"Request must be smaller than {rules.REQUEST_MAX} bytes for the operation"
            )
        chunks.append(chunk)
    return b"".join(chunks)


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
