"""The floor: the Runtime API round trip with no platform at all, stdlib only.

A tiny HTTP server takes an invoke on the Lambda path, hands it to whichever runtime loop is
waiting on `next`, and answers with what the loop posts to `response`. The runtime loops are
plain processes (`floor_runtime.py` under python3.11, `floor_runtime.mjs` under node) with no
sandbox, no agent, no freezing. Whatever lambdahost costs beyond these numbers is the platform.

    python floor_server.py PORT

Routes:
  POST /2015-03-31/functions/NAME/invocations        invoke NAME; with header
       `X-Floor-Cold: python|node` a fresh one-shot runtime process is started for this
       request alone (the floor of a cold start: process start + runtime init + round trip)
  POST /floor/runtimes?name=NAME&kind=python&count=N start N persistent runtime loops
  GET  /NAME/2018-06-01/runtime/invocation/next      (runtime) the next event
  POST /NAME/2018-06-01/runtime/invocation/ID/response
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).resolve().parent
COMMANDS = {
    "python": ["/usr/bin/python3.11", "-S", str(HERE / "floor_runtime.py")],
    "node": ["/usr/bin/node", str(HERE / "floor_runtime.mjs")],
}
INVOKE_PREFIX = "/2015-03-31/functions/"
RUNTIME_INFIX = "/2018-06-01/runtime/invocation/"


class Pending:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.answered = threading.Event()
        self.result = b""


class Floor:
    def __init__(self, port: int) -> None:
        self.port = port
        self.queues: dict[str, queue.Queue[tuple[str, Pending]]] = {}
        self.pending: dict[str, Pending] = {}
        self.children: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()

    def queue_for(self, name: str) -> queue.Queue[tuple[str, Pending]]:
        with self.lock:
            return self.queues.setdefault(name, queue.Queue())

    def spawn(self, name: str, kind: str, once: bool = False) -> int:
        env = {
            "PATH": "/usr/bin:/bin",
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
            "FLOOR_PREFIX": f"/{name}",
            "FLOOR_ONCE": "1" if once else "",
        }
        child = subprocess.Popen(COMMANDS[kind], env=env, stdin=subprocess.DEVNULL)
        with self.lock:
            self.children = [c for c in self.children if c.poll() is None]  # reap one-shots
            self.children.append(child)
        return child.pid

    def invoke(self, name: str, body: bytes) -> bytes:
        request_id = str(uuid.uuid4())
        pending = Pending(body)
        self.pending[request_id] = pending
        self.queue_for(name).put((request_id, pending))
        if not pending.answered.wait(120):
            raise TimeoutError(f"no runtime answered for {name}")
        del self.pending[request_id]
        return pending.result


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request waits ~40 ms for an ACK
    floor: Floor

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        name, _, rest = self.path[1:].partition(RUNTIME_INFIX)
        if rest != "next":
            return self._reply(404)
        request_id, pending = self.floor.queue_for(name).get()
        self._reply(200, pending.body, {"Lambda-Runtime-Aws-Request-Id": request_id})

    def do_POST(self) -> None:
        body = self._body()
        url = urlsplit(self.path)
        if url.path.startswith(INVOKE_PREFIX):
            name = url.path[len(INVOKE_PREFIX) :].partition("/")[0]
            kind = self.headers.get("X-Floor-Cold")
            if kind:
                name = f"cold-{uuid.uuid4().hex}"
                self.floor.spawn(name, kind, once=True)
            return self._reply(200, self.floor.invoke(name, body))
        if url.path == "/floor/runtimes":
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            count = int(query.get("count", "1"))
            pids = [self.floor.spawn(query["name"], query["kind"]) for _ in range(count)]
            return self._reply(200, json.dumps(pids).encode())
        _, _, rest = url.path[1:].partition(RUNTIME_INFIX)
        request_id, _, action = rest.partition("/")
        pending = self.floor.pending.get(request_id)
        if action != "response" or pending is None:
            return self._reply(404)
        pending.result = body
        pending.answered.set()
        self._reply(202, b'{"status":"OK"}')


def main() -> None:
    port = int(sys.argv[1])
    Handler.floor = Floor(port)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    os.write(1, b"ready\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
