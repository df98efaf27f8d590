"""The agent's select loop: Runtime API server, runtime process, output capture, host link.
(`boot.main` is the entry point: it starts the runtime before importing this module.)

One thread, one `selectors` loop, blocking writes (every peer is reading when we write), so
the warm path is: host frame → answer the parked `/next` → runtime posts → host frame.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time

from .http11 import Connection, ProtocolError, Request
from .protocol import FrameReader, encode
from .shared import JSON_TYPE, MAX_LINE, RUNTIME_PREFIX, STATUS_OK, error_body, now_ms

TYPE_CHECKING = False  # no `typing` import at run time (see http11)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .shared import ExtensionsHook, JSONObject, LogLine
    from .streaming import ResponseStream

MAX_RESPONSE_BYTES = 6291556
MAX_LOG_BYTES = 4 * 1024 * 1024  # per phase; output beyond it is dropped
MAX_LOG_LINES = 262144  # per phase; the host counts the same (invoke/agent_limits.py)
EXTENSION_PREFIXES = ("/2020-01-01/extension/", "/2022-07-01/telemetry", "/2020-08-15/logs")


class OutputCapture:
    """The runtime's stdout+stderr (one pipe, so their order is kept), split into lines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lines: list[LogLine] = []  # [epoch_ms, text]
        self._partial = b""
        self._size = 0
        # (epoch_ms, text) callback, set while telemetry may want lines
        self.on_line: Callable[[int, str], None] | None = None
        os.set_blocking(fd, False)

    def read(self) -> bool:
        """Read what is available; False at EOF."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                self.flush()
                return False
            self._add(data)

    def _add(self, data: bytes) -> None:
        stamp = now_ms()
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self._append(stamp, raw)
        while len(self._partial) > MAX_LINE:
            self._append(stamp, self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]

    def _append(self, stamp: int, raw: bytes) -> None:
        # The newline counts, and so does each line: a flood of empty lines would otherwise
        # grow one frame past what the host accepts (the host applies the same caps).
        self._size += len(raw) + 1
        if self._size <= MAX_LOG_BYTES and len(self.lines) < MAX_LOG_LINES:
            text = raw.decode(errors="replace") + "\n"
            self.lines.append([stamp, text])
            if self.on_line is not None:
                self.on_line(stamp, text)

    def flush(self) -> None:
        if self._partial:
            self._append(now_ms(), self._partial)
            self._partial = b""

    def take(self) -> list[LogLine]:
        """Everything printed so far (the pipe drained first: a runtime prints before it
        posts, so its output is already in the pipe when its post arrives)."""
        self.read()
        self.flush()
        lines, self.lines, self._size = self.lines, [], 0
        return lines


class Agent:
    def __init__(
        self,
        host: socket.socket,
        listener: socket.socket,
        runtime_pid: int,
        output_fd: int,
        extensions_api: Callable[[Agent], ExtensionsHook],
    ) -> None:
        self.host = host
        # The Extensions, Telemetry and Logs APIs, loaded on first use (`extensions.attach`);
        # given by `boot`, so this module need not import the one that builds on it.
        self.extensions_api = extensions_api
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.frames = FrameReader()
        self.runtime_pid = runtime_pid  # 0: the runtime could not be started
        self.output = OutputCapture(output_fd) if output_fd >= 0 else None
        self.initialized = False
        self.started_ns = time.monotonic_ns()
        self.booted_ms = time.time() * 1000
        self.parked: Connection | None = None  # a runtime waiting in /invocation/next
        self.pending: tuple[JSONObject, bytes] | None = None  # an invoke not yet fetched
        self.current: str | None = None  # request id handed out and not yet answered
        self.extensions: ExtensionsHook | None = None  # only once extensions exist

    # -- host link ---------------------------------------------------------------------
    def send(self, header: Mapping[str, object], body: bytes = b"") -> None:
        try:
            self.host.sendall(encode(header, body))
        except OSError:
            self.shutdown()

    def take_logs(self) -> list[LogLine]:
        """The runtime's output so far (none when it could not be started: no pipe then)."""
        return self.output.take() if self.output is not None else []

    def on_host(self) -> None:
        try:
            data = self.host.recv(1 << 20)
        except OSError:
            data = b""
        if not data:
            self.shutdown()  # the host is gone: nothing left to serve
        for header, body in self.frames.feed(data):
            if header.get("t") == "invoke":
                self.pending = (header, body)
                self.dispatch()
            elif header.get("t") == "flush":  # the host gave up waiting (a timeout)
                self.send({"t": "logs", "logs": self.take_logs()})
            elif header.get("t") == "report" and self.extensions is not None:
                self.extensions.on_report(header)
            elif header.get("t") == "shutdown":  # reclaimed: only sent with extensions
                if self.extensions is not None:
                    self.extensions.shutdown(header.get("reason", "spindown"), header["budget_ms"])
                self.send({"t": "bye", "logs": self.take_logs()})
                self.shutdown()

    # -- runtime process ---------------------------------------------------------------
    def init_failed(self, error_type: str, message: str) -> None:
        logs = self.take_logs()
        self.send({"t": "init_error", "error_type": error_type, "logs": logs},
                  error_body(error_type, message))  # fmt: skip
        self.shutdown()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.runtime_pid:
                self.runtime_exited(status)
            elif self.extensions is not None:
                self.extensions.child_exited(pid, status)

    def runtime_exited(self, status: int) -> None:
        if self.extensions is not None and self.extensions.shutting_down:
            self.runtime_pid = 0  # stopped on purpose: the phase's "bye" carries the output
            return
        logs = self.take_logs()
        code = os.waitstatus_to_exitcode(status)
        report = {"t": "exit", "status": max(code, 0), "signal": max(-code, 0), "logs": logs}
        report["phase"] = "invoke" if self.initialized else "init"
        self.runtime_pid = 0
        self.send(report)
        if self.extensions is None or not self.extensions.keeps_running():
            self.shutdown()  # else the host shuts the extensions down ("failure")

    def kill_runtime(self) -> None:
        if self.runtime_pid:
            try:
                os.killpg(self.runtime_pid, signal.SIGKILL)
            except OSError:
                pass

    def shutdown(self) -> None:
        self.kill_runtime()
        if self.extensions is not None:
            self.extensions.kill_all()
        os._exit(0)

    # -- Runtime API -------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand the pending invoke to the runtime if it is waiting for one."""
        if self.pending is None or self.parked is None:
            return
        header, payload = self.pending
        connection, self.pending, self.parked = self.parked, None, None
        self.current = header["id"]
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": header["id"],
            "Lambda-Runtime-Deadline-Ms": str(header["deadline_ms"]),
            "Lambda-Runtime-Invoked-Function-Arn": header["arn"],
        }
        if header.get("trace"):
            headers["Lambda-Runtime-Trace-Id"] = header["trace"]
        if header.get("client_context"):
            headers["Lambda-Runtime-Client-Context"] = header["client_context"]
        if header.get("identity"):
            headers["Lambda-Runtime-Cognito-Identity"] = header["identity"]
        if self.extensions is not None:
            self.extensions.on_invoke(header)
        connection.respond(200, payload, headers)

    def handle(self, connection: Connection, request: Request) -> None:
        path = request.path.split("?", 1)[0]
        if not path.startswith(RUNTIME_PREFIX):
            if path.startswith(EXTENSION_PREFIXES):  # Extensions, Telemetry and Logs APIs
                return self.extensions_api(self).handle(connection, request, path)
            return connection.respond(404, error_body("NotFound", "Not found"), JSON_TYPE)
        route = path[len(RUNTIME_PREFIX) :]
        if route == "invocation/next":
            if request.method != "GET":
                return self.not_allowed(connection)
            return self.next_invocation(connection)
        if route == "init/error":
            if request.method != "POST":
                return self.not_allowed(connection)
            if self.initialized:
                return self.invalid_transition(connection, "Ready", "InitError")
            connection.respond(202, STATUS_OK, JSON_TYPE)
            error_type = request.headers.get("lambda-runtime-function-error-type", "")
            logs = self.take_logs()
            body = request.body or error_body(error_type or "Runtime.Unknown", "")
            self.send({"t": "init_error", "error_type": error_type, "logs": logs}, body)
            return self.shutdown()
        parts = route.split("/")
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            if request.method != "POST":
                return self.not_allowed(connection)
            return self.invocation_result(connection, request, parts[1], parts[2] == "error")
        connection.respond(404, error_body("NotFound", "Not found"), JSON_TYPE)

    def next_invocation(self, connection: Connection) -> None:
        if self.current is not None:
            return self.invalid_transition(connection, "Invoking", "Ready")
        self.parked = connection
        if not self.initialized:
            self.initialized = True
            if self.extensions is not None:
                return self.extensions.on_runtime_ready()  # ready once extensions are too
            self.send_ready()
        self.dispatch()

    def send_ready(self, extra: Mapping[str, object] | None = None) -> None:
        init_ms = (time.monotonic_ns() - self.started_ns) / 1e6
        logs = self.take_logs()
        header = {"t": "ready", "init_ms": init_ms, "boot_ms": self.booted_ms, "logs": logs}
        self.send({**header, **(extra or {})})

    def invocation_result(
        self, connection: Connection, request: Request, request_id: str, failed: bool
    ) -> None:
        if self.current is None or request_id != self.current:
            return connection.respond(
                400, error_body("InvalidRequestID", "Invalid request ID"), JSON_TYPE
            )
        self.current = None
        error_type = request.headers.get("lambda-runtime-function-error-type", "")
        body = request.body
        if len(body) > MAX_RESPONSE_BYTES:
            connection.respond(
                413,
                error_body(
                    "RequestEntityTooLarge",
                    f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                ),
                JSON_TYPE,
            )
            failed, error_type = True, "Function.ResponseSizeTooLarge"
            body = error_body(
                error_type,
                "Response payload size exceeded maximum allowed payload size "
                f"({MAX_RESPONSE_BYTES} bytes).",
            )
        else:
            connection.respond(202, STATUS_OK, JSON_TYPE)
            if failed and not body:
                error_type = error_type or "Runtime.Unknown"
                body = error_body(error_type, "")
        header = {"t": "result", "id": request_id, "ok": not failed, "logs": self.take_logs()}
        if failed:
            header["error_type"] = error_type
        if self.extensions is not None:
            self.extensions.on_result(header, body)
        self.send(header, body)

    def not_allowed(self, connection: Connection) -> None:
        connection.respond(405, error_body("MethodNotAllowed", "Method not allowed"), JSON_TYPE)

    def invalid_transition(self, connection: Connection, state: str, target: str) -> None:
        message = (
            f"State transition from {state} to {target} failed for runtime. "
            "Error: State transition is not allowed"
        )
        connection.respond(403, error_body("InvalidStateTransition", message), JSON_TYPE)

    # -- loop --------------------------------------------------------------------------
    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock)
        connection.on_stream = lambda request: self.open_stream(connection, request)
        self.selector.register(sock, selectors.EVENT_READ, connection)

    def open_stream(self, connection: Connection, request: Request) -> ResponseStream:
        """A streamed response began (see `streaming`); imported on first use."""
        from .streaming import ResponseStream

        return ResponseStream(self, connection, request)

    def on_connection(self, connection: Connection) -> None:
        try:
            requests = connection.receive()
        except ProtocolError:
            requests = None
        if requests is None:
            connection.abandon_stream()
            self.selector.unregister(connection.sock)
            if self.parked is connection:
                self.parked = None
            if self.extensions is not None:
                self.extensions.forget(connection)
            connection.close()
            return
        for request in requests:
            self.handle(connection, request)

    def run(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(wake_read, selectors.EVENT_READ, "signal")
        self.selector.register(self.host, selectors.EVENT_READ, "host")
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        if self.output is not None:
            self.selector.register(self.output.fd, selectors.EVENT_READ, "output")
        self.wake_fd = wake_read
        self.reap()  # the runtime may have exited before SIGCHLD was handled
        while True:
            self.poll(None)

    def poll(self, timeout: float | None) -> None:
        """One round of the loop (also driven by the extensions' shutdown phase)."""
        for key, _ in self.selector.select(timeout):
            tag = key.data
            if isinstance(tag, Connection):
                self.on_connection(tag)
            elif tag == "host":
                self.on_host()
            elif tag == "listener":
                self.accept()
            elif tag == "output":
                if self.output is not None and not self.output.read():
                    self.selector.unregister(key.fd)
            elif tag == "signal":
                try:
                    os.read(self.wake_fd, 512)
                except BlockingIOError:
                    pass
                self.reap()
            elif callable(tag):  # registered by the extensions module
                tag()
