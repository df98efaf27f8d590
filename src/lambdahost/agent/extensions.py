"""The Extensions API (`/2020-01-01/extension/…`) and the extensions' part of the lifecycle.

Loaded only when an environment has extensions: external ones (the files of /opt/extensions,
started by `boot` before the runtime) or internal ones (registered from the runtime process).
The lifecycle follows Lambda's:
- init: external extensions start first; the runtime starts once all of them registered;
  init is complete (the host hears "ready") when the runtime AND every extension called
  `event/next`. Registration closes when the runtime asks for its first event.
- invoke: INVOKE goes to subscribed extensions when the runtime gets the event; the host hears
  the runtime's result at once (flagged `pending`), then "done" once every one of them called
  `next` again, so the environment stays busy (and unfrozen) until they finish.
- shutdown (host frame "shutdown"): the runtime gets SIGTERM and a short grace (only with
  external extensions), then SHUTDOWN goes to subscribed extensions; the agent answers "bye"
  when they all called `next` again or exited, or when the budget (2 s) runs out.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

from .http11 import Connection, Request
from .main import Agent, OutputCapture
from .shared import JSON_TYPE, MAX_LINE, STATUS_OK, TYPE_CHECKING, error_body, launch, now_ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from .shared import JSONObject, LogLine
    from .telemetry import Telemetry

PREFIX = "/2020-01-01/extension/"
MAX_EXTENSIONS = 10
EVENT_TYPES = ("INVOKE", "SHUTDOWN")
RUNTIME_GRACE_S = 0.3  # SIGTERM → SIGKILL for the runtime at shutdown (0.5 s with internal ones)
HISTORY_LIMIT = 2000  # init-phase telemetry kept for subscribers that arrive during init


class Extension:
    __slots__ = ("name", "id", "events", "external", "pid", "queue", "parked", "busy", "alive")

    def __init__(self, name: str, events: list[str], external: bool, pid: int) -> None:
        self.name = name
        self.id = str(uuid.uuid4())
        self.events = events
        self.external = external
        self.pid = pid
        self.queue: list[bytes] = []  # events not yet fetched
        self.parked: Connection | None = None  # waiting in event/next
        self.busy = True  # registered or handed an event, and not back in `next` since
        self.alive = True


class ExtensionOutput(OutputCapture):
    """The external extensions' stdout+stderr, merged into the runtime's log lines (as Lambda
    writes both to the function's log stream) and tagged `extension` for telemetry."""

    def __init__(self, fd: int, extensions: Extensions) -> None:
        super().__init__(fd)
        self.extensions = extensions

    def _append(self, stamp: int, raw: bytes) -> None:
        target = self.extensions.agent.output
        text = raw.decode(errors="replace") + "\n"
        if target is not None:
            target.lines.append([stamp, text])
        self.extensions.record_line(stamp, text, "extension")


class Extensions:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.by_id: dict[str, Extension] = {}
        self.launched: dict[str, int] = {}  # external file name → pid, until it registers
        self.runtime_launch: tuple[list[str], dict[str, str], int] | None = None
        self.output: ExtensionOutput | None = None
        self.registration_open = True
        self.runtime_ready = False
        self.ready_sent = False
        self.awaiting: str | None = None  # request id whose result went out as `pending`
        self.result_ns = 0
        self.shutting_down = False
        self.telemetry: Telemetry | None = None  # once someone subscribes
        self.history: list[tuple[int, str, object]] | None = []  # init-phase events
        self.account_id = os.environ.get("LAMBDAHOST_ACCOUNT_ID", "000000000000")
        self.invoke_started_ns = 0
        self.record(
            int(agent.booted_ms),
            "platform.initStart",
            {
                "initializationType": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
                "phase": "init",
                "functionName": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
                "functionVersion": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
            },
        )
        if agent.output is not None:
            agent.output.on_line = self.function_line

    # -- external extensions --------------------------------------------------------------
    def start_external(
        self, paths: list[str], argv: list[str], env: dict[str, str], runtime_fd: int
    ) -> None:
        """Launch the extensions; the runtime (argv, writing to runtime_fd) starts once every
        one of them registered."""
        self.runtime_launch = (argv, env, runtime_fd)
        read_fd, write_fd = os.pipe()
        os.set_inheritable(read_fd, False)
        self.output = ExtensionOutput(read_fd, self)
        self.agent.selector.register(read_fd, 1, self.read_output)  # EVENT_READ
        try:
            for path in paths:
                name = os.path.basename(path)
                try:
                    self.launched[name] = launch([path], env, write_fd)
                except OSError as error:
                    reason = (error.strerror or str(error)).lower()
                    return self.agent.init_failed(
                        "Extension.LaunchError", f"fork/exec {path}: {reason}"
                    )
        finally:
            os.close(write_fd)

    def read_output(self) -> None:
        if self.output is not None and not self.output.read():
            self.agent.selector.unregister(self.output.fd)
            self.output = None

    def maybe_start_runtime(self) -> None:
        if self.runtime_launch is None or any(
            pid for pid in self.launched.values()
        ):  # someone has not registered yet
            return
        argv, env, fd = self.runtime_launch
        self.runtime_launch = None
        try:
            self.agent.runtime_pid = launch(argv, env, fd)
        except OSError as error:
            message = f"fork/exec {argv[0]}: {(error.strerror or str(error)).lower()}"
            return self.agent.init_failed("Runtime.InvalidEntrypoint", message)
        finally:
            os.close(fd)

    def child_exited(self, pid: int, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        for name, launched in self.launched.items():
            if launched == pid:
                self.launched[name] = 0
                self.exited(name, code)
                return
        for ext in self.by_id.values():
            if ext.pid == pid:
                ext.alive, ext.busy, ext.parked = False, False, None
                self.exited(ext.name, code)
                return

    def exited(self, name: str, code: int) -> None:
        if self.shutting_down:
            return self.check_progress()
        if not self.ready_sent:
            reason = f"exit status {code}" if code >= 0 else f"signal {-code}"
            return self.agent.init_failed(
                "Extension.Crash", f"Extension {name} exited before init completed: {reason}"
            )
        self.check_progress()

    # -- Extensions API -------------------------------------------------------------------
    def handle(self, connection: Connection, request: Request, path: str) -> None:
        if not path.startswith(PREFIX):
            return self.subscribe(connection, request, path)
        route = path[len(PREFIX) :]
        if request.method not in ("GET" if route == "event/next" else "POST",):
            return connection.respond(405, error_body("MethodNotAllowed", "Method not allowed"))
        if route == "register":
            return self.register(connection, request)
        ext = self.identify(connection, request)
        if ext is None:
            return
        if route == "event/next":
            return self.next_event(connection, ext)
        if route in ("init/error", "exit/error"):
            return self.report_error(connection, request, ext, route == "init/error")
        connection.respond(404, error_body("NotFound", "Not found"), JSON_TYPE)

    def identify(self, connection: Connection, request: Request) -> Extension | None:
        ext_id = request.headers.get("lambda-extension-identifier", "")
        ext = self.by_id.get(ext_id)
        if ext is None:
            error_type = "Extension.UnknownExtensionIdentifier"
            if not ext_id:
                error_type = "Extension.MissingExtensionIdentifier"
            connection.respond(
                403, error_body(error_type, "Invalid extension identifier"), JSON_TYPE
            )
        return ext

    def register(self, connection: Connection, request: Request) -> None:
        name = request.headers.get("lambda-extension-name", "")
        try:
            events = json.loads(request.body or b"{}").get("events") or []
        except (ValueError, AttributeError):
            events = None
        if not name:
            return self.refuse(connection, 403, "Extension.InvalidExtensionName", "Empty name")
        if not isinstance(events, list) or any(event not in EVENT_TYPES for event in events):
            return self.refuse(connection, 400, "InvalidEventType", f"Invalid events: {events}")
        if not self.registration_open:
            return self.refuse(connection, 403, "Extension.InvalidState", "Registration is closed")
        if len(self.by_id) >= MAX_EXTENSIONS:
            return self.refuse(
                connection, 403, "Extension.TooManyExtensions", "Too many extensions"
            )
        if any(ext.name == name for ext in self.by_id.values()):
            return self.refuse(
                connection, 409, "Extension.AlreadyRegistered", f"{name} is already registered"
            )
        external = name in self.launched
        if not external and "SHUTDOWN" in events:
            return self.refuse(
                connection,
                403,
                "ShutdownEventNotSupportedForInternalExtension",
                "Internal extensions cannot register for the SHUTDOWN event",
            )
        ext = Extension(name, list(events), external, self.launched.pop(name, 0))
        self.by_id[ext.id] = ext
        env = os.environ
        body = {
            "functionName": env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            "functionVersion": env.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
            "handler": env.get("_HANDLER", ""),
        }
        if "accountid" in request.headers.get("lambda-extension-accept-feature", "").lower():
            body["accountId"] = self.account_id
        headers = {"Content-Type": "application/json", "Lambda-Extension-Identifier": ext.id}
        connection.respond(200, json.dumps(body).encode(), headers)
        state = {"name": name, "state": "Ready", "events": list(events)}
        self.record(now_ms(), "platform.extension", state)
        self.maybe_start_runtime()

    def refuse(self, connection: Connection, status: int, error_type: str, message: str) -> None:
        connection.respond(status, error_body(error_type, message), JSON_TYPE)

    def next_event(self, connection: Connection, ext: Extension) -> None:
        ext.busy = False  # asking for the next event ends work on the previous one
        if ext.parked is not None and ext.parked is not connection:
            ext.parked.close()
        ext.parked = connection
        self.deliver(ext)
        self.check_progress()

    def deliver(self, ext: Extension, event: bytes | None = None) -> None:
        if event is not None:
            ext.queue.append(event)
        if ext.parked is None or not ext.queue:
            return
        connection, ext.parked = ext.parked, None
        ext.busy = True
        headers = {
            "Content-Type": "application/json",
            "Lambda-Extension-Event-Identifier": str(uuid.uuid4()),
        }
        connection.respond(200, ext.queue.pop(0), headers)

    def subscribe(self, connection: Connection, request: Request, path: str) -> None:
        """PUT /2022-07-01/telemetry or /2020-08-15/logs from a registered extension."""
        from .telemetry import Telemetry, parse  # loaded only once someone subscribes

        logs_api = path.startswith("/2020-08-15/logs")
        if path.rstrip("/") not in ("/2022-07-01/telemetry", "/2020-08-15/logs"):
            return connection.respond(404, error_body("NotFound", "Not found"), JSON_TYPE)
        if request.method != "PUT":
            return connection.respond(405, error_body("MethodNotAllowed", "Method not allowed"))
        ext = self.identify(connection, request)
        if ext is None:
            return None
        try:
            subscription = parse(json.loads(request.body or b"{}"), logs_api)
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            return connection.respond(400, error_body("ValidationError", str(error)), JSON_TYPE)
        if self.telemetry is None:
            self.telemetry = Telemetry()
            output = self.agent.output
            if output is not None and output.on_line is None:
                output.on_line = self.function_line
        self.telemetry.subscribe(ext.name, logs_api, subscription, self.history or [])
        connection.respond(200, b"OK", {"Content-Type": "text/plain"})
        self.record(
            int(time.time() * 1000),
            "platform.telemetrySubscription",
            {"name": ext.name, "state": "Subscribed", "types": sorted(subscription[0])},
        )

    def forget(self, connection: Connection) -> None:
        """A connection closed: an extension parked on it is no longer waiting."""
        for ext in self.by_id.values():
            if ext.parked is connection:
                ext.parked = None

    def report_error(
        self, connection: Connection, request: Request, ext: Extension, during_init: bool
    ) -> None:
        error_type = request.headers.get("lambda-extension-function-error-type", "")
        error_type = error_type or "Extension.Unknown"
        if during_init and self.ready_sent:
            return self.refuse(connection, 403, "Extension.InvalidState", "Init already done")
        connection.respond(202, STATUS_OK, JSON_TYPE)
        if during_init:
            body = request.body or error_body(error_type, f"Extension {ext.name} init error")
            logs = self.take_logs()
            self.agent.send({"t": "init_error", "error_type": error_type, "logs": logs}, body)
            return self.agent.shutdown()
        line = f"Extension {ext.name} reported exit error: {error_type}\n"
        if self.agent.output is not None:
            self.agent.output.lines.append([now_ms(), line])
        ext.busy = False
        self.check_progress()

    # -- lifecycle hooks called by the agent ----------------------------------------------
    def on_runtime_ready(self) -> None:
        self.registration_open = False
        self.runtime_ready = True
        self.check_progress()

    def on_invoke(self, header: JSONObject) -> None:
        self.invoke_started_ns = time.monotonic_ns()
        trace = header.get("trace") or ""
        event = {
            "eventType": "INVOKE",
            "deadlineMs": header["deadline_ms"],
            "requestId": header["id"],
            "invokedFunctionArn": header["arn"],
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
        }
        data = json.dumps(event).encode()
        for ext in self.by_id.values():
            if "INVOKE" in ext.events and ext.alive:
                self.deliver(ext, data)
        record: dict[str, object] = {
            "requestId": header["id"],
            "version": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
        }
        if trace:
            record["tracing"] = {"type": "X-Amzn-Trace-Id", "value": trace}
        self.record(now_ms(), "platform.start", record)

    def on_result(self, header: JSONObject, body: bytes) -> None:
        """The runtime answered: add `pending` when extensions still work on this invoke."""
        elapsed_ms = (time.monotonic_ns() - self.invoke_started_ns) / 1e6
        status = "success" if header["ok"] else "error"
        metrics = {"durationMs": round(elapsed_ms, 3), "producedBytes": len(body)}
        record = {"requestId": header["id"], "status": status, "metrics": metrics}
        if not header["ok"]:
            record["errorType"] = header.get("error_type") or "Runtime.Unknown"
        self.record(now_ms(), "platform.runtimeDone", record)
        if self.telemetry is not None:
            header["telemetry"] = True
        if self.invoke_busy():
            header["pending"] = True
            self.awaiting = header["id"]
            self.result_ns = time.monotonic_ns()

    def invoke_busy(self) -> bool:
        return any(
            ext.alive and "INVOKE" in ext.events and (ext.busy or ext.queue)
            for ext in self.by_id.values()
        )

    def check_progress(self) -> None:
        if self.shutting_down:
            return
        if not self.ready_sent:
            if self.runtime_ready and not any(
                ext.alive and ext.busy for ext in self.by_id.values()
            ):
                self.ready_sent = True
                self.init_done()
            return
        if self.awaiting is not None and not self.invoke_busy():
            request_id, self.awaiting = self.awaiting, None
            extra_ms = (time.monotonic_ns() - self.result_ns) / 1e6
            header = {"t": "done", "id": request_id, "extensions_ms": extra_ms}
            if self.telemetry is not None:
                header["telemetry"] = True
            header["logs"] = self.take_logs()
            self.agent.send(header)

    def init_done(self) -> None:
        init_ms = (time.monotonic_ns() - self.agent.started_ns) / 1e6
        kind = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        stamp = now_ms()
        self.record(
            stamp,
            "platform.initRuntimeDone",
            {"initializationType": kind, "phase": "init", "status": "success"},
        )
        self.record(
            stamp,
            "platform.initReport",
            {
                "initializationType": kind,
                "phase": "init",
                "status": "success",
                "metrics": {"durationMs": round(init_ms, 3)},
            },
        )
        self.history = None
        extra = {"extensions": len(self.by_id), "telemetry": self.telemetry is not None}
        self.agent.send_ready(extra)

    def take_logs(self) -> list[LogLine]:
        if self.output is not None:
            self.read_output()
        return self.agent.take_logs()

    def keeps_running(self) -> bool:
        """After the runtime exits: stay up for the host's shutdown (SHUTDOWN "failure")."""
        return self.ready_sent and any(ext.alive for ext in self.by_id.values())

    # -- telemetry feed -------------------------------------------------------------------
    def record(self, stamp: int, kind: str, record: object) -> None:
        if self.history is not None and len(self.history) < HISTORY_LIMIT:
            self.history.append((stamp, kind, record))
        if self.telemetry is not None:
            self.telemetry.publish(stamp, kind, record)

    def record_line(self, stamp: int, text: str, kind: str) -> None:
        self.record(stamp, kind, text[:MAX_LINE].rstrip("\n"))

    def function_line(self, stamp: int, text: str) -> None:
        self.record_line(stamp, text, "function")

    def on_report(self, header: JSONObject) -> None:
        """The host's REPORT for an invoke, as `platform.report`."""
        record = header.get("record")
        if isinstance(record, dict):
            self.record(now_ms(), "platform.report", record)

    # -- shutdown -------------------------------------------------------------------------
    def shutdown(self, reason: str, budget_ms: int) -> None:
        """Run the shutdown phase inside the agent's loop, answer "bye" and exit."""
        self.shutting_down = True
        deadline = time.monotonic() + budget_ms / 1000
        agent = self.agent
        external = any(ext.external for ext in self.by_id.values())
        if agent.runtime_pid and reason == "spindown" and external:
            internal = any(not ext.external for ext in self.by_id.values())
            grace = RUNTIME_GRACE_S + (0.2 if internal else 0.0)
            try:
                os.kill(agent.runtime_pid, signal.SIGTERM)
            except OSError:
                pass
            self.wait(lambda: not agent.runtime_pid, min(deadline, time.monotonic() + grace))
        agent.kill_runtime()
        if self.telemetry is not None:
            self.telemetry.flush()
        event = json.dumps(
            {
                "eventType": "SHUTDOWN",
                "shutdownReason": reason,
                "deadlineMs": now_ms() + int((deadline - time.monotonic()) * 1000),
            }
        ).encode()
        targets = [e for e in self.by_id.values() if e.alive and "SHUTDOWN" in e.events]
        for ext in targets:
            ext.queue.clear()
            self.deliver(ext, event)
            ext.busy = True  # done when it asks for the next event (or exits)
        self.wait(lambda: not any(e.alive and e.busy for e in targets), deadline)
        if self.telemetry is not None:
            self.telemetry.close(max(0.0, min(0.2, deadline - time.monotonic())))
        agent.send({"t": "bye", "logs": self.take_logs()})
        agent.shutdown()

    def wait(self, done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:
            self.agent.poll(max(0.0, deadline - time.monotonic()))

    def kill_all(self) -> None:
        pids = [ext.pid for ext in self.by_id.values() if ext.alive and ext.pid > 0]
        pids += [pid for pid in self.launched.values() if pid]
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def attach(agent: Agent) -> Extensions:
    """The agent's Extensions, created on first use (boot, or a first API request)."""
    extensions = agent.extensions
    if extensions is None:
        extensions = agent.extensions = Extensions(agent)
    assert isinstance(extensions, Extensions)  # the only kind the agent gets
    return extensions
