"""The server's listening sockets: the address the operator chose and, when functions have a
network, the gateway address they reach the API at."""

from __future__ import annotations

import socket

_IP_FREEBIND = 15  # the gateway address exists only while some sandbox's veth holds it
WILDCARDS = ("", "0.0.0.0", "::")


def bind(host: str, port: int, *, freebind: bool = False) -> socket.socket:
    """A bound TCP socket for uvicorn (it listens); OSError names the address if taken."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if freebind:
            sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def gateway_listener(host: str, port: int, gateway: str | None) -> socket.socket | None:
    """`gateway:port` for functions, unless they have no network or `host` is a wildcard
    (which covers the gateway address already)."""
    if not gateway or host in WILDCARDS:
        return None
    return bind(gateway, port, freebind=True)
