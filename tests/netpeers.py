"""Network peers for tests: a web host in a network namespace the test makes itself, reached
through this host as functions reach the world, and a tiny DNS server on a loopback address
(as systemd-resolved's 127.0.0.53 is). Needs root (`ip netns`)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WEB_ADDRESS = "198.51.100.10"  # TEST-NET-2: outside the function network, routed via the host
WEB_PREFIX = "198.51.100"
WEB_PORT = 8080
WEB_BODY = "hello from the test host\n"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class WebHost:
    netns: str
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"


@contextlib.contextmanager
def web_host(work: Path) -> Iterator[WebHost]:
    """An HTTP server in namespace `lhtest-<pid>` at 198.51.100.10:8080, its veth's host side
    (`tn<pid>`, not `lh…`: that prefix is lambdahost's own) holding 198.51.100.1/24."""
    netns = f"lhtest-{os.getpid()}"
    host_if = f"tn{os.getpid() % 10**8}"
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", netns)
    _ip("netns", "add", netns)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{WEB_PREFIX}.1/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{WEB_ADDRESS}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", f"{WEB_PREFIX}.1")
        root = work / "www"
        root.mkdir(parents=True, exist_ok=True)
        (root / "index.html").write_text(WEB_BODY)
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server", str(WEB_PORT),
             "--bind", WEB_ADDRESS, "--directory", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(netns, WEB_ADDRESS, WEB_PORT)
        yield WebHost(netns, WEB_ADDRESS, WEB_PORT)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", netns)


def _wait_for_port(netns: str, address: str, port: int) -> None:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-c", probe], capture_output=True
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the test host's server at {address}:{port} did not start")


class DnsServer:
    """Answers A queries for the names it was given (UDP), NXDOMAIN for others; counts
    queries, so a test can tell its answer came from here."""

    def __init__(self, address: str, records: dict[str, str], port: int = 53) -> None:
        self.records = {name.lower().rstrip("."): ip for name, ip in records.items()}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            with contextlib.suppress(Exception):
                self.sock.sendto(self._answer(query), client)

    def _answer(self, query: bytes) -> bytes:
        query_id, _flags, _qd = struct.unpack_from("!HHH", query)
        labels, offset = [], 12
        while query[offset]:
            size = query[offset]
            labels.append(query[offset + 1 : offset + 1 + size].decode())
            offset += 1 + size
        question = query[12 : offset + 5]
        qtype = struct.unpack_from("!H", query, offset + 1)[0]
        name = ".".join(labels).lower()
        self.queries.append(name)
        address = self.records.get(name)
        if address is None or qtype != 1:
            rcode = 0 if address is not None else 3  # NODATA for other types, else NXDOMAIN
            return struct.pack("!HHHHHH", query_id, 0x8180 | rcode, 1, 0, 0, 0) + question
        answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
        return struct.pack("!HHHHHH", query_id, 0x8180, 1, 1, 0, 0) + question + answer
