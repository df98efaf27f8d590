"""The HTTP front door: one ASGI app serving every service on one endpoint."""

from __future__ import annotations

import asyncio
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
from lambdahost.api.lambda_.resources import action_of, foreign_resource
from lambdahost.api.protocols.base import Resolved
from lambdahost.api.routing import ServiceRouter
from lambdahost.api.service import Call, ServiceApi
from lambdahost.api.services import all_services
from lambdahost.api.wire import Head, WireResponse
from lambdahost.control.iam import (
    AssumedRoleCaller,
    Caller,
    IdentityDenies,
    ResourcePolicy,
    authorize,
)
from lambdahost.errors import LambdaError, ServiceError
from lambdahost.platform import AccountPlane, Platform

log = logging.getLogger("lambdahost.api")


class AuthFailure(LambdaError):
    status = 403


class Gateway:
    """Every API request: the service by protocol, SigV4, the body within the operation's
    limit, the operation's handler, and the answer or error in the service's protocol."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.principals = platform.principals
        self.blobs = platform.blobs
        self.code_urls = CodeUrls()
        default = all_services(platform.default, self.code_urls)
        self.router = ServiceRouter(default)
        # Each account's services, by name: their handlers hold that account's control plane.
        self._services = {platform.default.account_id: {s.name: s for s in default}}
        self.unverified = UnverifiedBodies()
        self._url_frontends: dict[str, function_urls.FunctionUrlFrontend] = {}

    async def handle(self, request: Request) -> Response:
        # Function URL requests have their own auth rules: route them before SigV4.
        if (url_target := function_urls.target_of(request)) is not None:
            frontend = await self._url_frontend(url_target.url_id)
            return await frontend.handle(request, url_target)
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
        auth = self._begin_auth(request, head.path, query_string, service.signing_name)
        limit, too_large = service.body_limit(resolved.name if resolved else None)
        body, caller = await self._read_body(request, auth, limit, too_large)
        if resolved is None:
            raise LambdaError(
                f"No {service.model.metadata['serviceId']} operation matches "
                f"{request.method} {head.path}",
                code="UnknownOperationException",
                status=404,
            )
        name, params = service.protocol.parse(resolved, head, body)
        owner = await self._authorize(service, name, params, caller)
        services = self._services.get(owner) or await self._services_of(owner)
        handler = services[service.name].handlers[name]  # parse refuses operations without one
        call = Call(params, _base_url(request), caller)
        output = await handler(call)
        if call.raw_response is not None:
            return call.raw_response, call.response_headers
        return service.protocol.serialize(name, output, request_id), call.response_headers

    def _begin_auth(
        self, request: Request, path: str, query: str, service: str
    ) -> tuple[sigv4.PendingSignature, Caller] | None:
        """The signed head checked, and who signed it (None when authentication is off)."""
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
        signer = self.principals.signer(sigv4.session_token(head))
        try:
            pending = sigv4.begin(
                head, signer.secret_for, region=self.settings.region, service=service
            )
        except sigv4.AuthError as exc:
            raise AuthFailure(exc.message, code=exc.code, status=exc.status) from None
        assert signer.found is not None  # begin() refuses a key without a secret
        return pending, signer.found.caller

    async def _read_body(
        self,
        request: Request,
        auth: tuple[sigv4.PendingSignature, Caller] | None,
        limit: int,
        too_large: Callable[[], LambdaError],
    ) -> tuple[bytes, Caller]:
        """The body, and who sent it (the default account's root when authentication is off)."""
        if auth is None:  # authentication is off
            root = Caller.root(self.settings.account_id, self.settings.credentials.access_key_id)
            return (await read_body(request, limit, too_large)).data, root
        pending, caller = auth
        # Until the signature is proven, the body counts against the shared bound.
        async with self.unverified.admit(expected_size(request, limit)):
            body = await read_body(request, limit, too_large, digest=pending.needs_body_hash)
            try:
                pending.finish(body.sha256)
            except sigv4.AuthError as exc:
                raise AuthFailure(exc.message, code=exc.code, status=exc.status) from None
        return body.data, caller  # joined only now that it is proven

    async def _authorize(
        self, service: ServiceApi, operation: str, params: dict[str, object], caller: Caller
    ) -> str:
        """Ask `iam.authorize` whether `caller` may make the call; the account it runs in (the
        owner of the resource it names)."""
        resource = (
            foreign_resource(operation, params, caller.account_id)
            if service.name == "lambda"
            else None
        )
        denies = await self._identity_policy(caller)
        if resource is None:
            if service.name == "lambda":
                action = action_of(operation)
            else:
                action = f"{service.signing_name}:{operation}"
            authorize(caller, action, "*", caller.account_id, identity_denies=denies)
            return caller.account_id
        region, owner = self.settings.region, resource.account_id
        plane = self.platform.opened(owner)
        if plane is None and self.platform.known(owner):
            plane = await asyncio.to_thread(self.platform.account, owner)
        policy: ResourcePolicy | None = None
        if resource.kind == "function":
            arn = f"arn:aws:lambda:{region}:{owner}:function:{resource.name}"
            arn += f":{resource.qualifier}" if resource.qualifier else ""
            if plane is not None:
                permissions = plane.permissions

                def policy(who: Caller, action: str) -> bool:
                    return permissions.allows(who, resource.name, resource.qualifier, action)

        else:
            arn = f"arn:aws:lambda:{region}:{owner}:layer:{resource.name}:{resource.version}"
            if plane is not None and resource.action == "lambda:GetLayerVersion":
                layers = plane.layers

                def policy(who: Caller, action: str) -> bool:
                    return layers.allows(who, resource.name, resource.version)

        await asyncio.to_thread(authorize, caller, resource.action, arn, owner, policy, denies)
        return owner

    async def _identity_policy(self, caller: Caller) -> IdentityDenies | None:
        """What denies `caller` by its identity: today only the revocation of its role's older
        sessions, kept in its account's store (read again at most every second)."""
        if not isinstance(caller, AssumedRoleCaller):
            return None
        plane = self.platform.opened(caller.account_id)
        if plane is None:
            plane = await asyncio.to_thread(self.platform.account, caller.account_id)
        revocations = plane.revocations
        if revocations.stale:
            await asyncio.to_thread(revocations.refresh)
        return revocations.denies

    async def _url_frontend(self, url_id: str) -> function_urls.FunctionUrlFrontend:
        """The function URL frontend of the account that owns the URL (the default account's
        answers URLs nobody owns, with a 404)."""
        planes = self.platform.accounts()
        owner = self.platform.default
        if len(planes) > 1:
            for plane in planes:
                if await asyncio.to_thread(plane.urls.owns, url_id):
                    owner = plane
                    break
        frontend = self._url_frontends.get(owner.account_id)
        if frontend is None:
            frontend = function_urls.FunctionUrlFrontend(
                owner.settings,
                owner.urls,
                owner.permissions,
                owner.invoker,
                self.unverified,
                self.principals,
                self._identity_policy,
            )
            self._url_frontends[owner.account_id] = frontend
        return frontend

    async def _services_of(self, account_id: str) -> dict[str, ServiceApi]:
        """The services of an account, built (and its plane opened) at its first call."""

        def build() -> dict[str, ServiceApi]:
            plane: AccountPlane = self.platform.account(account_id)
            return {s.name: s for s in all_services(plane, self.code_urls)}

        services = await asyncio.to_thread(build)
        return self._services.setdefault(account_id, services)

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
