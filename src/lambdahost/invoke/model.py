"""Value types shared by the invoke path: what to run, one request, one result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FunctionSpec:
    """Everything needed to start environments for one function version.

    `revision_id` changes whenever code or configuration changes; environments built from an
    older revision are never reused."""

    name: str
    arn: str  # unqualified function ARN
    version: str  # "$LATEST", "1", ...
    revision_id: str
    runtime: str  # a key of `runtimes.RUNTIMES`
    handler: str
    code_dir: Path  # unpacked code, read-only at /var/task
    memory_mb: int
    timeout_s: int
    ephemeral_mb: int = 512
    environment: dict[str, str] = field(default_factory=dict)  # the user's variables
    layer_dirs: tuple[Path, ...] = ()  # unpacked layers, merged into /opt in order
    region: str = "us-east-1"
    account_id: str = "000000000000"
    initialization_type: str = "on-demand"  # or "provisioned-concurrency"
    role: str = ""  # the execution role's ARN: whose credentials the environment gets

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.arn, self.version)


@dataclass(frozen=True)
class InvokeRequest:
    request_id: str
    payload: bytes
    invoked_arn: str  # the ARN as the caller named it (qualified when a qualifier was given)
    trace_id: str = ""
    client_context: str | None = None  # decoded JSON text of X-Amz-Client-Context
    cognito_identity: str | None = None


@dataclass
class InvokeResult:
    request_id: str
    payload: bytes  # the response, or the error document {errorMessage, errorType, ...}
    function_error: str | None  # None, or "Unhandled" as in X-Amz-Function-Error
    log_stream: str  # YYYY/MM/DD/[$LATEST]<environment id>
    log_lines: list[tuple[int, str]]  # (epoch ms, message): INIT output, START, output, END, REPORT
    duration_ms: float
    init_duration_ms: float | None = None  # set on a cold start
    max_memory_used_mb: int = 0
    # Lines still to come: the END and REPORT of an invoke answered before its extensions
    # were done (as Lambda does); resolved once they are.
    log_tail: asyncio.Future[list[tuple[int, str]]] | None = None


LogLine = tuple[int, str]
# Where lines go: (the environment's function, log stream, lines).
LogSink = Callable[["FunctionSpec", str, list[LogLine]], None]
