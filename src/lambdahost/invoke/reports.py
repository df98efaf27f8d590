"""What an environment's invokes write: log stream names, INIT_START, REPORT lines, the
Telemetry API's `platform.report` record and the platform's error documents."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from lambdahost.invoke.environment import Message
from lambdahost.invoke.model import FunctionSpec, InvokeRequest
from lambdahost.runtimes import runtime_version


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error_payload(error_type: str, message: str) -> bytes:
    # Key order as Lambda returns these platform errors.
    return f'{{"errorType":"{error_type}","errorMessage":"{message}"}}'.encode()


def exit_reason(message: Message, oom: bool) -> str:
    """Go's wording, as Lambda's `Runtime exited with error: ...` uses it."""
    if message.kind == "exit" and message.header.get("signal"):
        number = message.header["signal"]
        names = {9: "killed", 11: "segmentation fault", 6: "aborted", 15: "terminated"}
        return f"signal: {names.get(number, f'signal {number}')}"
    if message.kind == "exit" and not oom:
        return f"exit status {message.header.get('status', 0)}"
    return "signal: killed"  # the agent itself died (OOM or killed)


def log_stream_name(spec: FunctionSpec, env_id: str) -> str:
    return f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{spec.version}]{env_id}"


def init_start_line(spec: FunctionSpec) -> str:
    version = runtime_version(spec.runtime)
    digest = hashlib.sha256(version.encode()).hexdigest()
    arn = f"arn:aws:lambda:{spec.region}::runtime:{digest}"
    return f"INIT_START Runtime Version: {version}\tRuntime Version ARN: {arn}\n"


def report_record(
    request: InvokeRequest,
    duration_ms: float,
    spec: FunctionSpec,
    memory_mb: int,
    init_ms: float | None,
    message: Message,
) -> dict[str, Any]:
    """`platform.report`'s record for the Telemetry API."""
    metrics: dict[str, float | int] = {
        "durationMs": round(duration_ms, 3),
        "billedDurationMs": max(1, math.ceil(duration_ms)),
        "memorySizeMB": spec.memory_mb,
        "maxMemoryUsedMB": memory_mb,
    }
    if init_ms is not None:
        metrics["initDurationMs"] = round(init_ms, 3)
    if message.kind == "result":
        status = "success" if message.header.get("ok") else "error"
    else:
        status = "timeout" if message.kind == "timeout" else "failure"
    record: dict[str, Any] = {"requestId": request.request_id, "status": status}
    if status == "error":
        record["errorType"] = message.header.get("error_type") or "Runtime.Unknown"
    record["metrics"] = metrics
    if request.trace_id:
        record["tracing"] = {"type": "X-Amzn-Trace-Id", "value": request.trace_id}
    return record


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def report_line(
    request_id: str,
    duration_ms: float,
    spec: FunctionSpec,
    memory_mb: int,
    init_ms: float | None,
    status: str,
) -> str:
    text = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\t"
        f"Memory Size: {spec.memory_mb} MB\tMax Memory Used: {memory_mb} MB\t"
    )
    if init_ms is not None:
        text += f"Init Duration: {init_ms:.2f} ms\t"
    return text + status + "\n"
