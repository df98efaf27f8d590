"""Invoke: resolve the function, check the request, run it in an environment, hand its logs
to the one writer (`logbook`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdahost.config import Settings
from lambdahost.control import jackson, jsontext
from lambdahost.control.lambda_.aliases import AliasService, pick_version
from lambdahost.control.lambda_.functions import FunctionService
from lambdahost.control.lambda_.values import FunctionConfiguration, FunctionVersion
from lambdahost.errors import (
    InvalidParameterValue,
    InvalidRequestContent,
    LambdaError,
    RequestTooLarge,
    ResourceConflict,
    ResourceNotFound,
    ServiceError,
)
from lambdahost.invoke.capacity import host_throttled
from lambdahost.invoke.concurrency import ConcurrencyLimiter
from lambdahost.invoke.environment import Environment
from lambdahost.invoke.layers import merged_opt
from lambdahost.invoke.logbook import FunctionLogs
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, InvokeResult
from lambdahost.invoke.pool import EnvironmentPool
from lambdahost.invoke.queue import EventQueue
from lambdahost.invoke.streaming import ResponseStream
from lambdahost.runtimes.policy import served_by
from lambdahost.sandbox.api import SandboxBusyError, SandboxError

log = logging.getLogger("lambdahost.invoke")

SYNC_PAYLOAD_MAX = 6 * 1024 * 1024
ASYNC_PAYLOAD_MAX = 1024 * 1024
TAIL_BYTES = 4096


@dataclass
class InvokeOutcome:
    status: int
    request_id: str
    payload: bytes = b""
    function_error: str | None = None
    log_result: str | None = None
    executed_version: str | None = None


class Invoker:
    def __init__(
        self,
        settings: Settings,
        functions: FunctionService,
        aliases: AliasService,
        pool: EnvironmentPool,
        logs: FunctionLogs,
        limiter: ConcurrencyLimiter,
        queue: EventQueue,
    ) -> None:
        self.limiter = limiter
        self.settings = settings
        self.functions = functions
        self.aliases = aliases
        self.pool = pool
        self.logs = logs
        self.queue = queue
        self._cache: dict[tuple[str, str, str | None], tuple[int, Any]] = {}
        self._streaming: set[asyncio.Task[None]] = set()  # streamed invokes still running

    async def invoke(
        self,
        function_name: str,
        *,
        qualifier: str | None = None,
        payload: bytes = b"",
        invocation_type: str = "RequestResponse",
        log_type: str | None = None,
        client_context: str | None = None,
    ) -> InvokeOutcome:
        limit = ASYNC_PAYLOAD_MAX if invocation_type == "Event" else SYNC_PAYLOAD_MAX
        version, request = await self._prepare(
            function_name, qualifier, payload, limit, client_context
        )
        request_id, payload = request.request_id, request.payload
        if invocation_type == "DryRun":
            return InvokeOutcome(204, request_id)
        if invocation_type == "Event":
            name = version.configuration.name
            qualifier = qualifier or self.functions.ref(function_name).qualifier
            await asyncio.to_thread(self.queue.enqueue, name, qualifier, payload, request_id)
            return InvokeOutcome(202, request_id)
        spec = self.spec_for(version)
        result = await self.run(spec, request)
        outcome = InvokeOutcome(
            200,
            request_id,
            payload=result.payload,
            function_error=result.function_error,
            executed_version=spec.version,
        )
        if log_type == "Tail":
            outcome.log_result = log_tail(result)
        return outcome

    async def _prepare(
        self,
        function_name: str,
        qualifier: str | None,
        payload: bytes,
        limit: int,
        client_context: str | None,
    ) -> tuple[FunctionVersion, InvokeRequest]:
        """Check a synchronous or asynchronous invoke and resolve what it runs."""
        if len(payload) > limit:
            raise RequestTooLarge(
                f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )
        payload = _checked_json(payload)
        context_text = _decode_client_context(client_context)
        resolved = self.resolve_cached(function_name, qualifier)
        if resolved is None:
            resolved = await asyncio.to_thread(self.resolve, function_name, qualifier)
        version, invoked_arn = resolved
        _check_invocable(version.configuration)
        request = InvokeRequest(
            request_id=str(uuid.uuid4()),
            payload=payload,
            invoked_arn=invoked_arn,
            trace_id=trace_id(),
            client_context=context_text,
        )
        return version, request

    async def invoke_stream(
        self,
        function_name: str,
        *,
        qualifier: str | None = None,
        payload: bytes = b"",
        dry_run: bool = False,
        client_context: str | None = None,
    ) -> tuple[InvokeOutcome, ResponseStream | None]:
        """Start a synchronous invoke whose response is consumed as it is produced.

        Everything that can fail before the function runs (not found, throttled, bad payload)
        raises here; the returned stream then yields the chunks and ends with `result` set.
        The concurrency slot is held until the invoke ends, not until the stream is read."""
        version, request = await self._prepare(
            function_name, qualifier, payload, SYNC_PAYLOAD_MAX, client_context
        )
        outcome = InvokeOutcome(200, request.request_id)
        if dry_run:
            outcome.status = 204
            return outcome, None
        spec = self.spec_for(version)
        outcome.executed_version = spec.version
        slot = contextlib.ExitStack()
        slot.enter_context(self.limiter.slot(spec.name))  # TooManyRequests before any byte
        try:
            env = await self.pool.admit(spec)  # and the host's throttle, too
        except BaseException:
            slot.close()
            raise
        stream = ResponseStream()
        task = asyncio.ensure_future(self._run_streaming(spec, request, stream, slot, env))
        self._streaming.add(task)
        task.add_done_callback(self._streaming.discard)
        return outcome, stream

    async def _run_streaming(
        self,
        spec: FunctionSpec,
        request: InvokeRequest,
        stream: ResponseStream,
        slot: contextlib.ExitStack,
        env: Environment,
    ) -> None:
        try:
            with slot:
                result = await self.pool.invoke(spec, request, stream, env)
        except Exception as exc:
            stream.end(None, platform_failure(spec, exc))
            return
        except BaseException as exc:
            stream.end(None, exc)
            raise
        self.logs.invoked(spec, result)
        stream.end(result)

    def resolve(self, function_name: str, qualifier: str | None) -> tuple[FunctionVersion, str]:
        """The version to run and the ARN the caller invoked (alias routing applied).
        Reads the store only on a cache miss; see `resolve_cached`."""
        resolved = self._resolve(function_name, qualifier, load=True)
        assert resolved is not None  # loading either finds it or raises
        return resolved

    def resolve_cached(
        self, function_name: str, qualifier: str | None
    ) -> tuple[FunctionVersion, str] | None:
        """`resolve` from memory alone (no I/O, safe on the event loop), or None on a miss."""
        return self._resolve(function_name, qualifier, load=False)

    def _resolve(
        self, function_name: str, qualifier: str | None, *, load: bool
    ) -> tuple[FunctionVersion, str] | None:
        ref = self.functions.ref(function_name)
        qualifier = ref.qualified(qualifier)
        invoked_arn = self.functions.arn(ref.name, qualifier)
        number = qualifier
        try:
            if qualifier is not None and qualifier != "$LATEST" and not qualifier.isdigit():
                routing = self._cached(("alias", ref.name, qualifier), load, self.aliases.routing)
                if routing is None:
                    return None
                primary, weights, invoked_arn = routing
                number = pick_version(primary, weights)
            version = self._cached(("version", ref.name, number), load, self.functions.get)
        except ResourceNotFound:
            # Invoke names the qualified ARN: `:$LATEST`, `:1` or `:<alias>`
            # (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_Errors).
            asked = self.functions.arn(ref.name, qualifier or "$LATEST")
            raise ResourceNotFound(f"Function not found: {asked}") from None
        return None if version is None else (version, invoked_arn)

    def _cached(self, key: tuple[str, str, str | None], load: bool, fetch: Any) -> Any:
        generation = self.functions.generation
        hit = self._cache.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        if not load:
            return None
        value = fetch(key[1], key[2])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (generation, value)
        return value

    async def run(self, spec: FunctionSpec, request: InvokeRequest) -> InvokeResult:
        """Run one request under the function's concurrency limits (TooManyRequests if none)."""
        with self.limiter.slot(spec.name):
            try:
                result = await self.pool.invoke(spec, request)
            except LambdaError:
                raise  # throttles
            except Exception as exc:
                raise platform_failure(spec, exc) from None
        self.logs.invoked(spec, result)
        return result

    def spec_for(self, version: FunctionVersion) -> FunctionSpec:
        c = version.configuration
        return FunctionSpec(
            name=c.name,
            arn=c.arn,
            version=c.version,
            revision_id=c.revision_id,
            runtime=served_by(c.runtime),  # the runtime that runs it (`runtimes.policy`)
            handler=c.handler,
            code_dir=version.code_dir,
            memory_mb=c.memory_mb,
            timeout_s=c.timeout_s,
            ephemeral_mb=c.ephemeral_mb,
            environment=dict(c.environment),
            layer_dirs=self._opt(version.layer_dirs),
            region=self.settings.region,
            account_id=self.settings.account_id,
            role=c.role,
        )

    def _opt(self, layer_dirs: tuple[Path, ...]) -> tuple[Path, ...]:
        merged = merged_opt(self.settings.data_dir / "blobs" / "opt", layer_dirs)
        return (merged,) if merged else ()


def platform_failure(spec: FunctionSpec, error: Exception) -> LambdaError:
    """What the caller gets when the platform (not the function) failed: AWS's documented 500
    `ServiceException`, which SDKs retry and the async queue tries again; details in our log."""
    if isinstance(error, LambdaError):
        return error
    if isinstance(error, SandboxBusyError):  # the host is starting all it can: a throttle
        log.warning("cannot start an execution environment for %s now: %s", spec.name, error)
        return host_throttled("The host is starting as many execution environments as it can.")
    if isinstance(error, SandboxError):
        log.error("cannot start an execution environment for %s: %s", spec.name, error)
        text = "Lambda could not start an execution environment for the function. Try again."
    else:
        log.error("invoke of %s failed in the platform", spec.name, exc_info=error)
        text = "Lambda could not run the function because of an internal error. Try again."
    return ServiceError(text)


def log_tail(result: InvokeResult) -> str:
    """`LogResult`: the last 4 KB of the invoke's log, base64-encoded. The platform's
    INIT_START line goes to the log stream only, as in Lambda (issue 12)."""
    lines = (line for _, line in result.log_lines if not line.startswith("INIT_START "))
    text = "".join(lines).encode()
    return base64.b64encode(text[-TAIL_BYTES:]).decode()


def _checked_json(payload: bytes) -> bytes:
    if not payload.strip():
        return b"{}"
    try:
        jsontext.check(payload)  # valid JSON however deep: the function gets it as-is
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestContent(
            "Could not parse request body into json: Could not parse payload into json: "
            + jackson.describe(payload)
        ) from None
    return payload


def _decode_client_context(value: str | None) -> str | None:
    if not value:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode()
        jsontext.loads(text)  # too deep is a ValueError too
    except (binascii.Error, ValueError):
        raise InvalidParameterValue(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
    if len(value) > 3583:
        raise InvalidParameterValue("Client context must be smaller than 3583 bytes.")
    return text


def _check_invocable(config: FunctionConfiguration) -> None:
    state = config.state
    if state != "Active":
        raise ResourceConflict(
            "The operation cannot be performed at this time. The function is currently in the "
            f"following state: {state}"
        )


def trace_id() -> str:
    root = f"1-{int(time.time()):08x}-{os.urandom(12).hex()}"
    return f"Root={root};Parent={os.urandom(8).hex()};Sampled=0"
