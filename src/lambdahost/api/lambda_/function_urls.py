"""Function URL requests: HTTP in, payload format 2.0 event, function result, HTTP out.

Two ways in, both on the API's port:
- by host: `Host: <url-id>.lambda-url.<region>.localhost[:port]` (what `FunctionUrl` says;
  `*.localhost` resolves to 127.0.0.1 in browsers and with systemd-resolved), and
- by path, needing no DNS: `http://127.0.0.1:<port>/_lambdahost/url/<url-id>/<path…>`; the
  function sees `/<path…>` as its rawPath.

Access follows Lambda: an `AWS_IAM` URL takes requests SigV4-signed (service `lambda`) by the
root credentials; a `NONE` URL takes anonymous requests only when the function's
resource-based policy lets the public principal `lambda:InvokeFunctionUrl` (with
`lambda:FunctionUrlAuthType` NONE) *and* `lambda:InvokeFunction` (with
`lambda:InvokedViaFunctionUrl`), as Lambda documents for URLs created since October 2025
(README, "Function URLs", has the evidence and why).
CORS preflights are answered from the URL's `Cors` config without invoking the function.
RESPONSE_STREAM URLs stream the function's response as it is produced (`url_streaming`)."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lambdahost.api import sigv4
from lambdahost.api.bodies import Body, UnverifiedBodies, expected_size, read_body
from lambdahost.api.lambda_.url_responses import (
    ACCESS_DENIED,
    UrlRejection,
    forbidden,
    http_response,
    rejection_for,
)
from lambdahost.config import Keyring, Settings
from lambdahost.control.iam import Caller, IdentityDenies
from lambdahost.control.lambda_.permissions import (
    INVOKE_FUNCTION,
    INVOKE_FUNCTION_URL,
    PermissionService,
)
from lambdahost.control.lambda_.urls import FunctionUrl, UrlService
from lambdahost.control.sts.sessions import Principals, Sessions
from lambdahost.control.sts.tokens import TokenKey
from lambdahost.errors import AccessDenied, LambdaError
from lambdahost.invoke.service import Invoker

log = logging.getLogger("lambdahost.api.urls")
# What denies a caller by its identity (`Gateway._identity_policy`).
IdentityPolicyOf = Callable[[Caller], Awaitable[IdentityDenies | None]]
PATH_PREFIX = "/_lambdahost/url/"
REQUEST_MAX = 6 * 1024 * 1024
_HOST = re.compile(r"^([a-z0-9]{32})\.lambda-url\.([a-z0-9-]+)\.localhost\.?(?::\d+)?$")
_PATH = re.compile(r"^/_lambdahost/url/([a-z0-9]{32})(/.*)?$")
_TEXT_TYPES = ("application/json", "application/javascript", "application/xml")


@dataclass(frozen=True)
class Target:
    """Which URL a request is for, and the path the function should see."""

    url_id: str
    raw_path: str
    region: str | None  # from the host form; None for the path form


def target_of(request: Request) -> Target | None:
    """The function URL a request addresses, or None for an ordinary API request."""
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    host = (request.headers.get("host") or "").lower()
    if m := _HOST.match(host):
        return Target(m[1], raw_path or "/", m[2])
    if raw_path.startswith(PATH_PREFIX) and (m := _PATH.match(raw_path)):
        return Target(m[1], m[2] or "/", None)
    return None


class FunctionUrlFrontend:
    def __init__(
        self,
        settings: Settings,
        urls: UrlService,
        permissions: PermissionService,
        invoker: Invoker,
        unverified: UnverifiedBodies | None = None,
        principals: Principals | None = None,
        identity_policy: IdentityPolicyOf | None = None,
    ) -> None:
        """The URLs of one account (`settings.account_id`); `principals` knows every access
        key (of any account, and role sessions) that may sign an AWS_IAM request, and
        `identity_policy` what denies a caller by its identity (revoked role sessions)."""
        self.settings = settings
        self.urls = urls
        self.permissions = permissions
        self.invoker = invoker
        self.principals = principals or Principals(
            Keyring(settings.data_dir, settings.credentials, settings.account_id),
            Sessions(TokenKey.in_dir(settings.data_dir)),
        )
        self.identity_policy = identity_policy
        # Bodies of AWS_IAM requests whose signature is not yet proven (shared with the API).
        self.unverified = unverified or UnverifiedBodies()

    async def handle(self, request: Request, target: Target) -> Response:
        request_id = str(uuid.uuid4())
        url: FunctionUrl | None = None
        try:
            url = await self._find(target)
            if _is_preflight(request) and url.cors is not None:
                return _preflight(url.cors, request)
            # Who may call is settled before a byte of the body is read: the signed head of
            # an AWS_IAM request, the resource policy of a NONE one.
            auth = self._begin_auth(url, request)
            body, caller = await self._read_and_authorize(url, request, auth)
            event = self._event(url, target, request, body, caller, request_id)
            if url.invoke_mode == "RESPONSE_STREAM":
                from lambdahost.api.lambda_.url_streaming import invoke_streaming

                status, headers, content, request_id = await invoke_streaming(
                    self.invoker, url, event
                )
            else:
                status, headers, content, request_id = await self._invoke(url, event)
        except UrlRejection as exc:
            status, headers, content = _message(exc.status, exc.message, exc.error_type)
        except Exception:
            log.exception("internal error serving function URL %s", target.url_id)
            status, headers, content = _message(500, "Internal Server Error")
        if url is not None and url.cors is not None:
            headers = _with_cors(url.cors, request.headers.get("origin"), headers)
        if isinstance(content, bytes):
            response: Response = Response(content, status)
        else:
            response = StreamingResponse(content, status)
        response.raw_headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1", "replace"))
            for name, value in [*headers, ("x-amzn-requestid", request_id)]
        )
        return response

    async def _find(self, target: Target) -> FunctionUrl:
        # A URL id nobody created (here, or in this region) answers 403 `{"Message":null}`
        # (recorded AWS answer, localstack test_lambda.py test_lambda_url_non_existing_url);
        # one whose alias was deleted answers 403 Forbidden (`UrlService.find` raises it).
        unknown = UrlRejection(403, None, ACCESS_DENIED)
        if target.region is not None and target.region != self.settings.region:
            raise unknown
        try:
            url = await run_in_threadpool(self.urls.find, target.url_id)
        except AccessDenied:
            raise forbidden() from None
        if url is None:
            raise unknown
        return url

    # -- auth -----------------------------------------------------------------------------

    def _begin_auth(
        self, url: FunctionUrl, request: Request
    ) -> tuple[sigv4.PendingSignature, Caller] | None:
        if url.auth_type != "AWS_IAM" or not self.settings.auth:
            return None
        head = sigv4.SignedRequest(
            method=request.method,
            path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=[
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
            ],
        )
        settings = self.settings
        signer = self.principals.signer(sigv4.session_token(head))
        try:
            pending = sigv4.begin(head, signer.secret_for, region=settings.region, service="lambda")
        except sigv4.AuthError as exc:
            raise _auth_rejection(exc) from None
        except LambdaError as exc:  # an expired session token
            raise UrlRejection(403, exc.message) from None
        assert signer.found is not None  # begin() refuses a key without a secret
        return pending, signer.found.caller

    async def _read_and_authorize(
        self,
        url: FunctionUrl,
        request: Request,
        auth: tuple[sigv4.PendingSignature, Caller] | None,
    ) -> tuple[bytes, Caller | None]:
        """The body, and who signed it (AWS_IAM) or None (anonymous)."""
        if url.auth_type != "AWS_IAM":
            self._check_public(url)
            return (await _read_body(request)).data, None
        if auth is None:  # authentication is off
            settings = self.settings
            root = Caller.root(settings.account_id, settings.credentials.access_key_id)
            return (await _read_body(request)).data, root
        pending, caller = auth
        async with self.unverified.admit(expected_size(request, REQUEST_MAX)):
            body = await _read_body(request, digest=pending.needs_body_hash)
            try:
                pending.finish(body.sha256)
            except sigv4.AuthError as exc:
                raise _auth_rejection(exc) from None
        if self.identity_policy is not None:
            denies = await self.identity_policy(caller)
            if denies is not None and denies(caller, INVOKE_FUNCTION_URL):
                raise forbidden()
        # A signer of another account needs the function's policy to grant it the URL.
        if caller.account_id != self.settings.account_id:
            allowed = await run_in_threadpool(
                self.permissions.allows,
                caller,
                url.function_name,
                url.qualifier,
                INVOKE_FUNCTION_URL,
            )
            if not allowed:
                raise forbidden()
        return body.data, caller

    def _check_public(self, url: FunctionUrl) -> None:
        context = {
            "lambda:FunctionUrlAuthType": "NONE",
            "lambda:InvokedViaFunctionUrl": "true",
        }
        permissions = self.permissions
        for action in (INVOKE_FUNCTION_URL, INVOKE_FUNCTION):
            if not permissions.allows_public(url.function_name, url.qualifier, action, context):
                raise forbidden()

    # -- the event ------------------------------------------------------------------------

    def _event(
        self,
        url: FunctionUrl,
        target: Target,
        request: Request,
        body: bytes,
        caller: Caller | None,
        request_id: str,
    ) -> dict[str, Any]:
        settings = self.settings
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for raw_name, raw_value in request.scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name == "cookie":
                cookies += [c.strip() for c in value.split(";") if c.strip()]
            else:
                headers[name] = f"{headers[name]},{value}" if name in headers else value
        source_ip = request.client.host if request.client else "127.0.0.1"
        headers.setdefault("x-forwarded-for", source_ip)
        headers.setdefault("x-forwarded-proto", request.url.scheme)
        if request.url.port:
            headers.setdefault("x-forwarded-port", str(request.url.port))
        headers.setdefault(
            "x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
        )
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        now = datetime.now(UTC)
        domain = f"{url.url_id}.lambda-url.{settings.region}.localhost"
        context: dict[str, Any] = {
            "accountId": caller.account_id if caller else "anonymous",
            "apiId": url.url_id,
            "domainName": domain,
            "domainPrefix": url.url_id,
            "http": {
                "method": request.method,
                "path": target.raw_path,
                "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        }
        if caller:
            context["authorizer"] = {
                "iam": {
                    "accessKey": caller.access_key_id,
                    "accountId": caller.account_id,
                    "callerId": caller.user_id,
                    "cognitoIdentity": None,
                    "principalOrgId": None,
                    "userArn": caller.arn,
                    "userId": caller.user_id,
                }
            }
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": target.raw_path,
            "rawQueryString": raw_query,
        }
        if cookies:
            event["cookies"] = cookies
        event["headers"] = headers
        if raw_query:
            params: dict[str, str] = {}
            for key, value in parse_qsl(raw_query, keep_blank_values=True):
                params[key] = f"{params[key]},{value}" if key in params else value
            event["queryStringParameters"] = params
        event["requestContext"] = context
        is_base64 = False
        if body:
            text = _as_text(body, headers.get("content-type", ""))
            is_base64 = text is None
            event["body"] = base64.b64encode(body).decode() if text is None else text
        event["isBase64Encoded"] = is_base64
        return event

    # -- invoking and the response --------------------------------------------------------

    async def _invoke(
        self, url: FunctionUrl, event: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], bytes, str]:
        try:
            outcome = await self.invoker.invoke(
                url.function_name,
                qualifier=url.qualifier or None,
                payload=json.dumps(event).encode(),
            )
        except LambdaError as exc:
            raise rejection_for(exc) from None
        if outcome.function_error:
            raise UrlRejection(502, "Internal Server Error")
        status, headers, content = http_response(outcome.payload)
        return status, headers, content, outcome.request_id


def _message(
    status: int, message: str | None, error_type: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [("content-type", "application/json")]
    if error_type:
        headers.append(("x-amzn-errortype", error_type))
    body = json.dumps({"Message": message}, separators=(",", ":")).encode()  # as AWS: compact
    return status, headers, body


def _as_text(body: bytes, content_type: str) -> str | None:
    """The body as text when its type is textual (and it decodes), else None for base64."""
    kind = content_type.split(";", 1)[0].strip().lower()
    textual = (
        kind.startswith("text/")
        or kind in _TEXT_TYPES
        or kind.endswith("+json")
        or kind.endswith("+xml")
    )
    if not textual:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _auth_rejection(exc: sigv4.AuthError) -> UrlRejection:
    missing = exc.code == "MissingAuthenticationTokenException"
    return UrlRejection(403, "Forbidden" if missing else exc.message)


async def _read_body(request: Request, *, digest: bool = False) -> Body:
    return await read_body(
        request, REQUEST_MAX, lambda: UrlRejection(413, "Request Entity Too Large"), digest=digest
    )


# -- CORS -----------------------------------------------------------------------------------


def _is_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "origin" in request.headers
        and "access-control-request-method" in request.headers
    )


def _allowed_origin(cors: dict[str, Any], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for `origin`, or None when it is not allowed."""
    if not origin:
        return None
    origins = cors.get("AllowOrigins") or []
    if "*" in origins:
        # With credentials a browser rejects "*": name the origin instead.
        return origin if cors.get("AllowCredentials") else "*"
    return origin if origin in origins else None


def _preflight(cors: dict[str, Any], request: Request) -> Response:
    headers: list[tuple[str, str]] = []
    allow_origin = _allowed_origin(cors, request.headers.get("origin"))
    wanted = request.headers.get("access-control-request-method", "").upper()
    methods = [m.upper() for m in cors.get("AllowMethods") or []]
    if allow_origin and ("*" in methods or wanted in methods):
        headers.append(("access-control-allow-origin", allow_origin))
        headers.append(("access-control-allow-methods", ",".join(methods)))
        if cors.get("AllowHeaders"):
            headers.append(("access-control-allow-headers", ",".join(cors["AllowHeaders"])))
        if cors.get("ExposeHeaders"):
            headers.append(("access-control-expose-headers", ",".join(cors["ExposeHeaders"])))
        if cors.get("MaxAge") is not None:
            headers.append(("access-control-max-age", str(cors["MaxAge"])))
        if cors.get("AllowCredentials"):
            headers.append(("access-control-allow-credentials", "true"))
    headers.append(("vary", "Origin"))
    response = Response(b"", 200)
    response.raw_headers.extend(
        (k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers
    )
    return response


def _with_cors(
    cors: dict[str, Any], origin: str | None, headers: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The URL's CORS config replaces whatever CORS headers the function returned."""
    kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
    allow_origin = _allowed_origin(cors, origin)
    if allow_origin is None:
        return kept
    kept.append(("access-control-allow-origin", allow_origin))
    if cors.get("ExposeHeaders"):
        kept.append(("access-control-expose-headers", ",".join(cors["ExposeHeaders"])))
    if cors.get("AllowCredentials"):
        kept.append(("access-control-allow-credentials", "true"))
    kept.append(("vary", "Origin"))
    return kept
