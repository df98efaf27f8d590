"""The text of an environment's log: stream names, INIT_START/INIT_REPORT, START, END and
REPORT lines, the lines the platform adds when a function times out or exits, the Telemetry
API's `platform.report` record and the platform's error documents.

The pool hands over what happened (the agent's final message, durations, memory) and gets
back the caller's payload and the lines; it writes no text itself."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambdahost.invoke.environment import Message
from lambdahost.invoke.model import FunctionSpec, InvokeRequest, LogLine
from lambdahost.runtimes import runtime_version, runtime_version_arn


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
    arn = runtime_version_arn(spec.runtime, spec.region)
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


def start_line(request_id: str, spec: FunctionSpec) -> LogLine:
    return (now_ms(), f"START RequestId: {request_id} Version: {spec.version}\n")


def init_report_line(init_ms: float, status: str) -> str:
    return f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: {status}\n"


@dataclass(frozen=True)
class Ending:
    """How an invoke ended, for its caller and its log."""

    payload: bytes  # the response, or the error document
    function_error: str | None
    duration_ms: float  # as billed: a timeout counts the whole timeout
    lines: list[LogLine]  # what the platform writes after the function's own output


def invoke_ended(
    spec: FunctionSpec,
    request: InvokeRequest,
    message: Message,
    duration_ms: float,
    memory_mb: int,
    init_ms: float | None,
    oom_killed: Callable[[], bool],
) -> Ending:
    """An invoke's final message (result, timeout, or the runtime's exit) as its ending."""
    request_id = request.request_id
    lines: list[LogLine] = []
    status = ""
    function_error: str | None = "Unhandled"
    if message.kind == "result":
        payload = message.body
        function_error = None if message.header.get("ok") else "Unhandled"
    elif message.kind == "timeout":
        duration_ms = spec.timeout_s * 1000.0
        text = f"Task timed out after {spec.timeout_s:.2f} seconds"
        lines.append((now_ms(), f"{iso_now()} {request_id} {text}\n"))
        payload = error_payload("Sandbox.Timedout", f"RequestId: {request_id} Error: {text}")
        status = "Status: timeout\t"
    else:  # the runtime (or the whole agent) exited mid-invoke
        text = exited_text(request_id, message, oom_killed)
        lines += [(now_ms(), text + "\n"), (now_ms(), "Runtime.ExitError\n")]
        payload = error_payload("Runtime.ExitError", text)
        status = "Status: error\tError Type: Runtime.ExitError\t"
    lines.append((now_ms(), f"END RequestId: {request_id}\n"))
    lines.append((now_ms(), report_line(request_id, duration_ms, spec, memory_mb, init_ms, status)))
    return Ending(payload, function_error, duration_ms, lines)


def init_failed(
    spec: FunctionSpec,
    request: InvokeRequest,
    message: Message,
    init_ms: float,
    memory_mb: int,
    oom_killed: Callable[[], bool],
    init_timeout_s: float,
) -> Ending:
    """A request whose environment failed its init: the error, then the INIT_REPORT and an
    invoke that never ran (START, END, a zero-duration REPORT)."""
    request_id = request.request_id
    lines: list[LogLine] = []
    if message.kind == "init_error":
        error_type = message.header.get("error_type") or "Runtime.Unknown"
        payload = message.body
    elif message.kind == "timeout":
        error_type = "Runtime.InitError"
        text = f"Init timed out after {init_timeout_s:.2f} seconds"
        payload = error_payload(error_type, f"RequestId: {request_id} Error: {text}")
    else:
        error_type = "Runtime.ExitError"
        text = exited_text(request_id, message, oom_killed)
        lines += [(now_ms(), text + "\n"), (now_ms(), "Runtime.ExitError\n")]
        payload = error_payload(error_type, text)
    status = "timeout" if message.kind == "timeout" else f"error\tError Type: {error_type}"
    stamp = now_ms()
    lines += [
        (stamp, init_report_line(init_ms, status)),
        (stamp, f"START RequestId: {request_id} Version: {spec.version}\n"),
        (stamp, f"END RequestId: {request_id}\n"),
        (stamp, report_line(request_id, 0.0, spec, memory_mb, None, f"Status: {status}\t")),
    ]
    return Ending(payload, "Unhandled", 0.0, lines)


def prewarm_failed(message: Message, init_ms: float) -> tuple[str, LogLine]:
    """Why a provisioned environment failed its init, and its INIT_REPORT line."""
    status = message.header.get("error_type") or message.kind
    line = init_report_line(init_ms, f"error\tError Type: {status}")
    return f"Function failed on initialization: {status}", (now_ms(), line)


def exited_text(request_id: str, message: Message, oom_killed: Callable[[], bool]) -> str:
    # A callable: whether it was an OOM kill is a cgroup read, needed only on this path.
    reason = exit_reason(message, oom_killed())
    return f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
