"""A lean Lambda API client: SigV4-signed requests over one keep-alive `http.client` connection.

The benchmark must measure the server, not the SDK, so this client avoids boto3's machinery:
headers are signed with botocore's `SigV4Auth` and cached per (method, path, body) for a while,
which is valid because the server accepts any signature within its 15-minute clock window.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

API = "/2015-03-31/functions"
ROLE = "arn:aws:iam::000000000000:role/lambda-role"
# Well inside the server's 15-minute window, so a cached signature never goes stale mid-run.
SIGNATURE_REUSE_S = 60.0


class ApiError(RuntimeError):
    def __init__(self, status: int, body: bytes, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]!r}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect; picklable, so worker processes can open their own."""

    host: str
    port: int
    access_key: str = "bench"
    secret_key: str = "bench"
    region: str = "us-east-1"

    def connect(self) -> LambdaClient:
        return LambdaClient(self)


@dataclass
class Reply:
    status: int  # headers: names in lower case
    headers: dict[str, str]
    body: bytes


class LambdaClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._signer = SigV4Auth(
            Credentials(endpoint.access_key, endpoint.secret_key), "lambda", endpoint.region
        )
        self._signed: dict[tuple[str, str, bytes], tuple[float, dict[str, str]]] = {}
        self._connection: http.client.HTTPConnection | None = None

    # -- transport ------------------------------------------------------------------------
    def open(self) -> None:
        """Connect now (so a measurement does not include the TCP handshake)."""
        if self._connection is None:
            connection = http.client.HTTPConnection(
                self.endpoint.host, self.endpoint.port, timeout=120
            )
            connection.connect()
            assert connection.sock is not None
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connection = connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        signed = self._headers(method, path, body, headers or {})
        for attempt in (1, 2):
            self.open()
            assert self._connection is not None
            try:
                # bytes bodies go out in the same send() as the headers: no Nagle stall.
                self._connection.request(method, path, body=body, headers=signed)
                response = self._connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # the server closed an idle keep-alive connection: retry once
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self.close()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        raise AssertionError("unreachable")

    def _headers(
        self, method: str, path: str, body: bytes, extra: dict[str, str]
    ) -> dict[str, str]:
        key = (method, path + "\n" + json.dumps(extra, sort_keys=True), body)
        now = time.monotonic()
        cached = self._signed.get(key)
        if cached is not None and now - cached[0] < SIGNATURE_REUSE_S:
            return cached[1]
        url = f"http://{self.endpoint.host}:{self.endpoint.port}{path}"
        request = AWSRequest(method=method, url=url, data=body, headers=dict(extra))
        self._signer.add_auth(request)
        headers = dict(request.headers.items())
        if len(self._signed) > 1024:
            self._signed.clear()
        self._signed[key] = (now, headers)
        return headers

    # -- Lambda operations ----------------------------------------------------------------
    def invoke(
        self, name: str, payload: bytes = b"{}", headers: dict[str, str] | None = None
    ) -> Reply:
        """A synchronous invoke; raises unless it answered 200 without a function error."""
        reply = self.request("POST", f"{API}/{quote(name, safe='')}/invocations", payload, headers)
        if reply.status != 200 or "x-amz-function-error" in reply.headers:
            raise ApiError(reply.status, reply.body, f"invoke {name}")
        return reply

    def call(self, method: str, path: str, document: dict[str, Any] | None = None) -> Any:
        body = json.dumps(document).encode() if document is not None else b""
        headers = {"Content-Type": "application/json"} if document is not None else None
        reply = self.request(method, path, body, headers)
        if reply.status >= 300:
            raise ApiError(reply.status, reply.body, f"{method} {path}")
        return json.loads(reply.body) if reply.body else None

    def create_function(self, name: str, runtime: str, handler: str, zip_bytes: bytes) -> None:
        self.call(
            "POST",
            API,
            {
                "FunctionName": name,
                "Runtime": runtime,
                "Role": ROLE,
                "Handler": handler,
                "MemorySize": 128,
                "Timeout": 30,
                "Code": {"ZipFile": base64.b64encode(zip_bytes).decode()},
            },
        )

    def configuration(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"{API}/{quote(name, safe='')}/configuration")

    def set_environment(self, name: str, variables: dict[str, str]) -> None:
        self.call(
            "PUT",
            f"{API}/{quote(name, safe='')}/configuration",
            {"Environment": {"Variables": variables}},
        )

    def wait_settled(self, name: str, timeout_s: float = 60.0) -> None:
        """Until the function is Active and its last update Successful."""
        deadline = time.monotonic() + timeout_s
        delay = 0.002
        while True:
            config = self.configuration(name)
            if config.get("State") == "Active" and config.get("LastUpdateStatus") in (
                None,
                "Successful",
            ):
                return
            if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
                raise RuntimeError(f"function {name} failed: {config}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"function {name} did not settle: {config}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
