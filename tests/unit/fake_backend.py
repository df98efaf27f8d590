"""A sandbox backend without sandboxes, for the pool's unit tests.

It keeps the `lambdahost.sandbox.api` contract as the pool sees it: `start()` returns a
Sandbox whose "agent" (a thread here, not a process) talks the host protocol over the socket
passed in `pass_fds`: "ready" after init, then one "result" per "invoke" echoing the event.
`FAKE_MODE` in the function's environment picks a misbehaviour: `init_error` (the runtime
reports an init error), `crash` (the runtime exits on the first invoke)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

from lambdahost.agent.protocol import FrameReader, encode
from lambdahost.sandbox.api import Backend, Sandbox, SandboxError, SandboxSpec, SandboxStats


def _ms() -> int:
    return int(time.time() * 1000)


class FakeSandbox(Sandbox):
    def __init__(self, spec: SandboxSpec, sock: socket.socket) -> None:
        self.spec = spec
        self.uid = 65000
        self.frozen = False
        self.destroyed = False
        self.invokes = 0
        self._sock = sock
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- the "agent" -----------------------------------------------------------------------
    def _send(self, header: dict, body: bytes = b"") -> None:
        self._sock.sendall(encode(header, body))

    def _serve(self) -> None:
        mode = self.spec.env.get("FAKE_MODE", "echo")
        try:
            if mode == "init_error":
                doc = json.dumps({"errorMessage": "no", "errorType": "Runtime.Fake"}).encode()
                self._send({"t": "init_error", "error_type": "Runtime.Fake", "logs": []}, doc)
                return
            self._send({"t": "ready", "init_ms": 1, "logs": [[_ms(), "fake init\n"]]})
            frames = FrameReader()
            while data := self._sock.recv(1 << 16):
                for header, body in frames.feed(data):
                    if header["t"] == "flush":
                        self._send({"t": "logs", "logs": []})
                    elif header["t"] == "invoke" and mode == "crash":
                        self._send({"t": "exit", "status": 1, "signal": 0, "logs": []})
                        return
                    elif header["t"] == "invoke":
                        self.invokes += 1
                        answer = {
                            "sandbox": self.spec.sandbox_id,
                            "invokes": self.invokes,
                            "event": json.loads(body or b"null"),
                        }
                        logs = [[_ms(), f"handled {header['id']}\n"]]
                        head = {"t": "result", "id": header["id"], "ok": True, "logs": logs}
                        self._send(head, json.dumps(answer).encode())
        except OSError:
            pass  # destroyed: the host end is gone
        finally:
            self._exited.set()
            self._sock.close()

    # -- the Sandbox contract --------------------------------------------------------------
    @property
    def pid(self) -> int:
        return os.getpid()

    async def freeze(self) -> None:
        self.frozen = True

    async def thaw(self) -> None:
        self.frozen = False

    async def wait(self) -> int:
        await asyncio.to_thread(self._exited.wait)
        return 0

    def alive(self) -> bool:
        return not self._exited.is_set()

    def stats(self) -> SandboxStats:
        return SandboxStats(32 << 20, 48 << 20, False, 1)

    async def destroy(self) -> None:
        if not self.destroyed:
            self.destroyed = True
            self.frozen = False
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            await asyncio.to_thread(self._exited.wait, 5)


class FakeBackend(Backend):
    def __init__(self) -> None:
        self.started: list[FakeSandbox] = []
        self.fail_with: Exception | None = None  # raised by the next start()s
        self.closed = False
        self.stale_cleaned = 0

    async def start(self, spec: SandboxSpec) -> Sandbox:
        if self.fail_with is not None:
            raise self.fail_with
        if not spec.pass_fds:
            raise SandboxError("no agent socket in pass_fds")
        # The caller closes its copy of the agent's end once start() returns, as a real
        # backend's child process would have inherited it by then.
        sock = socket.socket(fileno=os.dup(spec.pass_fds[0]))
        sandbox = FakeSandbox(spec, sock)
        self.started.append(sandbox)
        return sandbox

    def close(self) -> None:
        self.closed = True

    def cleanup_stale(self) -> int:
        self.stale_cleaned += 1
        return 0

    @property
    def live(self) -> list[FakeSandbox]:
        return [s for s in self.started if not s.destroyed]
