"""The functions' DNS relay (`sandbox/dns.py`) on loopback ports: it relays, and a flood of
queries holds a bounded number of sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from netpeers import DnsServer

from lambdahost.sandbox import dns


def query(name: str, query_id: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0" + b"\0\1\0\1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_relays_udp_and_tcp() -> None:
    upstream = DnsServer("127.0.0.1", {"web.test": "198.51.100.10"}, port=0)

    async def body() -> None:
        relay = dns.DnsForwarder(
            "127.0.0.1", ["127.0.0.1"], port=free_udp_port(), upstream_port=upstream.port
        )
        await relay.start()
        try:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.setblocking(False)
                await loop.sock_connect(client, ("127.0.0.1", relay.port))
                await loop.sock_sendall(client, query("web.test"))
                answer = await asyncio.wait_for(loop.sock_recv(client, 512), 5)
            assert answer[:2] == b"\x12\x34" and answer.endswith(socket.inet_aton("198.51.100.10"))
        finally:
            relay.close()

    try:
        asyncio.run(body())
    finally:
        upstream.close()
    assert upstream.queries == ["web.test"]


def test_a_flood_holds_a_bounded_number_of_sockets() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # an upstream that never answers
    silent.bind(("127.0.0.1", 0))

    async def body() -> None:
        relay = dns.DnsForwarder(
            "127.0.0.1", ["127.0.0.1"], port=free_udp_port(),
            upstream_port=silent.getsockname()[1],
        )  # fmt: skip
        await relay.start()
        before = open_fds()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                for n in range(4 * dns.MAX_IN_FLIGHT):
                    client.sendto(query("x.test", n), ("127.0.0.1", relay.port))
                await asyncio.sleep(0.5)  # every datagram received, none answered
            assert open_fds() - before <= dns.MAX_IN_FLIGHT + 8
        finally:
            relay.close()

    try:
        asyncio.run(body())
    finally:
        silent.close()
