"""The python3.11 runtime loop: load `_HANDLER`, then fetch events from the Runtime API, call
the handler, post its result. Stdlib only; error documents, messages and log lines follow
AWS's Python runtime (awslambdaric) so code and tooling that parse them keep working.

Started through `bootstrap.py` (a module, unlike a script, is loaded from cached bytecode).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
import time

TYPE_CHECKING = False  # no `typing` import at run time: ~2.5 ms of every cold start
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec
    from logging import LogRecord
    from types import ModuleType
    from typing import Any, TypedDict

    # A handler takes the event (any JSON value) and the context; what it returns is
    # marshalled as JSON (`to_json`).
    HandlerFunction = Callable[[Any, "LambdaContext"], object]

    class ErrorDocument(TypedDict):
        errorMessage: str
        errorType: str
        requestId: str
        stackTrace: list[str]
else:
    Loader = object  # the import system duck-types loaders; importlib.abc costs ~20 ms

API_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
LOG_INDENT = "\u00a0"  # AWS indents logged tracebacks with no-break spaces


class FaultError(Exception):
    """A failure the runtime reports with its own `Runtime.*` error type."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type, self.message, self.trace = error_type, message, trace or []


class CognitoIdentity:
    def __init__(self, data: dict[str, Any]) -> None:
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class Client:
    def __init__(self, data: dict[str, Any]) -> None:
        self.installation_id = data.get("installation_id")
        self.app_title = data.get("app_title")
        self.app_version_name = data.get("app_version_name")
        self.app_version_code = data.get("app_version_code")
        self.app_package_name = data.get("app_package_name")


class ClientContext:
    def __init__(self, data: dict[str, Any]) -> None:
        self.client = Client(data["client"]) if data.get("client") else None
        self.custom = data.get("custom")
        self.env = data.get("env")


class LambdaContext:
    def __init__(
        self, request_id: str, deadline_ms: int, invoked_arn: str, headers: dict[str, str]
    ) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_arn
        # A string, as in AWS's runtime (awslambdaric reads it from the environment as is).
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self._deadline_ms = deadline_ms
        client_context = headers.get("lambda-runtime-client-context")
        self.client_context = ClientContext(json.loads(client_context)) if client_context else None
        identity = headers.get("lambda-runtime-cognito-identity")
        self.identity = CognitoIdentity(json.loads(identity) if identity else {})

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - time.time_ns() // 1_000_000, 0)

    def log(self, message: str) -> None:
        sys.stdout.write(str(message))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


class RuntimeClient:
    """One keep-alive connection to the Runtime API. A raw socket rather than http.client,
    whose imports (the email package) cost ~13 ms of every cold start; the server is our
    agent, which always answers with Content-Length."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: runtime\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.sock.sendall(head.encode() + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = self.buffer[end + 4 :]
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        content, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split(" ", 2)[1]), fields, content

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("Runtime API closed the connection")
        self.buffer += data

    def next(self) -> tuple[bytes, dict[str, str]]:
        _, headers, body = self.request("GET", "/invocation/next")
        return body, headers

    def post(self, path: str, body: bytes, error_type: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if error_type:
            headers[ERROR_TYPE_HEADER] = error_type
        self.request("POST", path, body, headers)


def error_document(error: BaseException | FaultError, request_id: str = "") -> ErrorDocument:
    if isinstance(error, FaultError):
        message, error_type, trace = error.message, error.error_type, error.trace
    else:
        import traceback  # only when something failed: it costs ~2 ms at start-up

        frames = traceback.extract_tb(error.__traceback__)
        # Drop the runtime's own frames at the top, as AWS does.
        while frames and frames[0].filename == __file__:
            frames = traceback.StackSummary.from_list(frames[1:])
        message, error_type = str(error), type(error).__name__
        trace = traceback.format_list(frames)
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": trace,
    }


def log_error(document: ErrorDocument) -> None:
    """One log event as AWS prints it: lines joined by carriage returns."""
    line = "[ERROR]"
    if document["errorType"]:
        line += " " + document["errorType"] + (":" if document["errorMessage"] else "")
    if document["errorMessage"]:
        line += " " + document["errorMessage"]
    lines = [line, "Traceback (most recent call last):"]
    for element in document["stackTrace"]:
        for trace_line in element.splitlines() or [""]:
            stripped = trace_line.lstrip(" ")
            lines.append(LOG_INDENT * (len(trace_line) - len(stripped)) + stripped)
    sys.stdout.write("\r".join(lines) + "\n")


def load_handler(handler: str) -> HandlerFunction:
    try:
        module_name, function_name = handler.rsplit(".", 1)
    except ValueError as error:
        raise FaultError(
            "Runtime.MalformedHandlerName", f"Bad handler '{handler}': {error}"
        ) from None
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise FaultError(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {module_name} as a handler module",
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as error:
        raise FaultError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {error}"
        ) from None
    except SyntaxError as error:
        trace = [f'  File "{error.filename}" Line {error.lineno}\n    {error.text}']
        raise FaultError(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {error}",
            trace,
        ) from None
    try:
        # Not checked for being callable: calling it fails at invoke time, as in AWS.
        function: HandlerFunction = getattr(module, function_name)
    except AttributeError:
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        raise FaultError("Runtime.HandlerNotFound", message) from None
    return function


def to_json(value: object) -> bytes:
    try:
        return json.dumps(value, default=_encode_extra).encode()
    except (TypeError, ValueError) as error:
        raise FaultError("Runtime.MarshalError", f"Unable to marshal response: {error}") from None


def _encode_extra(value: object) -> int | float:
    import decimal  # rare: only when a handler returns a Decimal (e.g. from DynamoDB)

    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class LoggingHook:
    """Gives the root logger AWS's handler the moment user code imports `logging`.

    AWS configures it before loading the handler, so `logger.info()` prints once the level
    is set and `logging.basicConfig()` is a no-op; importing `logging` ourselves would cost
    ~4 ms of every cold start, so we wait for the first import of it and finish it here."""

    request_id = ""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        import importlib.machinery
        import logging

        self.configure()
        # Out of sys.modules again, or the pending import would find it there and then
        # execute the module a second time from its real spec.
        del sys.modules["logging"]
        real = logging.__spec__

        class Existing(Loader):  # hands the configured module to the pending import
            def create_module(self, spec: ModuleSpec) -> ModuleType:
                return logging

            def exec_module(self, module: ModuleType) -> None:
                module.__spec__ = real

        spec = importlib.machinery.ModuleSpec("logging", Existing(), origin=real.origin)
        spec.submodule_search_locations = real.submodule_search_locations
        return spec

    def configure(self) -> None:
        """Set up the root logger (`find_spec` just imported `logging`)."""
        import logging

        hook = self

        class Handler(logging.Handler):
            def emit(self, record: LogRecord) -> None:
                record.aws_request_id = hook.request_id
                sys.stdout.write(self.format(record))

        handler = Handler()
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
        logging.Formatter.converter = time.gmtime
        logging.getLogger().addHandler(handler)


LOGGING = LoggingHook()


# Where the runtime's own AWS SDK (boto3, botocore) is mounted: AWS's python3.11 keeps it in
# the interpreter's site-packages, searched after the function's code and layers.
SDK_SITE_PACKAGES = "/var/lang/lib/python3.11/site-packages"


def setup_path(task_root: str) -> None:
    """AWS's python3.11 search order: the code, the layers, the runtime's site-packages (the
    SDK), then /var/runtime (PYTHONPATH) and the standard library; what comes first wins."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if entry != here]  # no user code from here
    site_packages = "/opt/python/lib/python3.11/site-packages"
    sys.path[0:0] = [task_root, site_packages, "/opt/python", SDK_SITE_PACKAGES]
    if os.path.isdir(site_packages):
        import site  # only for .pth files in layers

        site.addsitedir(site_packages)


def invoke(
    client: RuntimeClient, handler: HandlerFunction, body: bytes, headers: dict[str, str]
) -> None:
    request_id = headers["lambda-runtime-aws-request-id"]
    LOGGING.request_id = request_id
    os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id") or ""
    try:
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms") or 0),
            headers.get("lambda-runtime-invoked-function-arn") or "",
            headers,
        )
        event = json.loads(body) if body else {}
        result = to_json(handler(event, context))
    except Exception as error:
        document = error_document(error, request_id)
        log_error(document)
        path = f"/invocation/{request_id}/error"
        client.post(path, json.dumps(document).encode(), document["errorType"])
        return
    client.post(f"/invocation/{request_id}/response", result)


def main() -> None:
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    sys.meta_path.insert(0, LOGGING)
    setup_path(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    try:
        handler = load_handler(os.environ["_HANDLER"])
    except Exception as error:
        document = error_document(error)
        log_error(document)
        client.post("/init/error", json.dumps(document).encode(), document["errorType"])
        sys.exit(1)
    while True:
        body, headers = client.next()
        invoke(client, handler, body, headers)
