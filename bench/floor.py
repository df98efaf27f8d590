"""Run the floor (`floor_server.py`) as a subprocess for the length of a benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lambda_client import Endpoint
from server_process import free_port

SERVER = Path(__file__).resolve().parent / "floor_server.py"


@dataclass
class Floor:
    endpoint: Endpoint
    process: subprocess.Popen[bytes]

    def start_runtimes(self, name: str, kind: str, count: int = 1) -> list[int]:
        """Start `count` persistent runtime loops (python | node) serving function `name`;
        returns their pids."""
        client = self.endpoint.connect()
        try:
            query = f"name={name}&kind={kind}&count={count}"
            reply = client.request("POST", f"/floor/runtimes?{query}")
            return json.loads(reply.body)
        finally:
            client.close()


@contextlib.contextmanager
def running_floor() -> Iterator[Floor]:
    port = free_port()
    # Its own session, so that one killpg() ends it and every runtime it started.
    process = subprocess.Popen(
        [sys.executable, "-S", str(SERVER), str(port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the floor server did not start")
        yield Floor(Endpoint("127.0.0.1", port), process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
