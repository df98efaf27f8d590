"""The DNS forwarder functions use: the gateway address, port 53, UDP and TCP, relaying each
query to the host's own resolvers.

Why not copy the host's resolv.conf into sandboxes: on many hosts it names a loopback resolver
(systemd-resolved's 127.0.0.53, a local dnsmasq), which inside a sandbox is the sandbox's own
loopback. Relaying from the host reaches whatever the host uses, loopback included, and the
firewall lets sandboxes reach nothing else of the host but this and the API port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("lambdahost.sandbox")

DNS_PORT = 53
RESOLV_CONF = Path("/etc/resolv.conf")
_QUERY_TIMEOUT_S = 2.0  # per upstream, then the next; resolvers retry on their own
_MAX_TCP_MESSAGE = 65535
_IP_FREEBIND = 15  # the gateway address exists only while some veth holds it
# Queries relayed at once (each holds a socket for up to _QUERY_TIMEOUT_S per upstream):
# beyond, a query is dropped and its client retries, so a flood from a hostile function
# cannot take the server's descriptors.
MAX_IN_FLIGHT = 256
MAX_TCP_CLIENTS = 64
_TCP_IDLE_S = 10.0


def host_resolvers(path: Path = RESOLV_CONF) -> list[str]:
    """The `nameserver` addresses of the host's resolv.conf (IPv4 and IPv6, in order)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    servers = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            with contextlib.suppress(ValueError):
                servers.append(str(ipaddress.ip_address(fields[1].split("%")[0])))
    return servers


def _bound(kind: int, address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class DnsForwarder:
    """Listens on `address:port`; `upstreams` empty means the host's resolv.conf, read again
    for every query (cheap, and follows the host's changes)."""

    def __init__(
        self,
        address: str,
        upstreams: Sequence[str] = (),
        port: int = DNS_PORT,
        upstream_port: int = DNS_PORT,
    ) -> None:
        self.address = address
        self.port = port
        self.upstream_port = upstream_port
        self._upstreams = list(upstreams)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_clients = 0

    def upstreams(self) -> list[str]:
        return self._upstreams or host_resolvers()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp_sock = _bound(socket.SOCK_DGRAM, self.address, self.port)
        self._sockets.append(udp_sock)
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpFront(self), sock=udp_sock)
        self._udp = transport
        tcp_sock = _bound(socket.SOCK_STREAM, self.address, self.port)
        self._sockets.append(tcp_sock)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)

    def close(self) -> None:
        """Stop listening; also after the loop it ran on has closed."""
        try:
            if self._udp is not None:
                self._udp.close()
            if self._tcp is not None:
                self._tcp.close()
            for task in self._tasks:
                task.cancel()
        except RuntimeError:  # the loop is closed: nothing will close the sockets but us
            for sock in self._sockets:
                sock.close()

    def received(self, query: bytes, client: tuple[str, int]) -> None:
        """A UDP query: relayed, or dropped while MAX_IN_FLIGHT are (its client retries)."""
        if len(self._tasks) < MAX_IN_FLIGHT:
            self.spawn(self.answer_udp(query, client))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer_udp(self, query: bytes, client: tuple[str, int]) -> None:
        for upstream in self.upstreams():
            reply = await _ask_udp(upstream, self.upstream_port, query)
            if reply is not None:
                if self._udp is not None and not self._udp.is_closing():
                    self._udp.sendto(reply, client)
                return
        log.debug("no resolver answered a function's DNS query")

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while True:
                try:  # an idle client must not hold one of the few places for long
                    async with asyncio.timeout(_TCP_IDLE_S):
                        size = int.from_bytes(await reader.readexactly(2), "big")
                        query = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return
                for upstream in self.upstreams():
                    reply = await _ask_tcp(upstream, self.upstream_port, query)
                    if reply is not None:
                        writer.write(len(reply).to_bytes(2, "big") + reply)
                        await writer.drain()
                        break
                else:
                    return
        finally:
            self._tcp_clients -= 1
            writer.close()


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, forwarder: DnsForwarder) -> None:
        self.forwarder = forwarder

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.forwarder.received(data, (str(addr[0]), int(addr[1])))


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes) -> None:
        self.query_id = query_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        # A reply to this query only (same id); anything else on the port is ignored.
        if data[:2] == self.query_id and not self.answer.done():
            self.answer.set_result(data)


async def _ask_udp(upstream: str, port: int, query: bytes) -> bytes | None:
    """One query to one resolver from a fresh port; None on timeout or error."""
    if len(query) < 12:
        return None
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Reply(query[:2]), remote_addr=(upstream, port)
        )
    except OSError:
        return None
    try:
        transport.sendto(query)
        return await asyncio.wait_for(protocol.answer, _QUERY_TIMEOUT_S)
    except (TimeoutError, OSError):
        return None
    finally:
        transport.close()


async def _ask_tcp(upstream: str, port: int, query: bytes) -> bytes | None:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(upstream, port), _QUERY_TIMEOUT_S
        )
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(len(query).to_bytes(2, "big") + query)
        await writer.drain()
        size = int.from_bytes(
            await asyncio.wait_for(reader.readexactly(2), _QUERY_TIMEOUT_S), "big"
        )
        if size > _MAX_TCP_MESSAGE:
            return None
        return await asyncio.wait_for(reader.readexactly(size), _QUERY_TIMEOUT_S)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.close()
