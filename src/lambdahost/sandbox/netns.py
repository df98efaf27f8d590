"""Network namespaces with one veth interface plugged in, made and removed through netlink.

Each namespace is held by a descriptor, never named under /run/netns: nothing is left on the
host when the process that holds it dies, except the host side of its veth pair, which
`remove_links` deletes. Every call here blocks for a few milliseconds and changes the calling
thread's network namespace for a moment, so callers run them on one dedicated thread
(`network.FunctionNetwork`), never on the event loop.

Why pyroute2: it is the maintained netlink library for Python; the alternative, `ip`
commands, cost a fork and an exec each (~16 ms for a namespace and its veth, against ~5 ms
here), and cannot name a namespace by descriptor.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute

CLONE_NEWNET = 0x40000000
SANDBOX_IFNAME = "eth0"  # what the function sees, as in a Lambda environment
LOOPBACK_INDEX = 1  # in every new namespace
SANDBOX_INDEX = 2  # eth0's, asked for: a new namespace's indexes are its own

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


@dataclass(frozen=True)
class Plug:
    """One namespace's interface: `address` inside on `eth0`, `ifname` its host side, which
    also holds `gateway` (the same address on every host-side veth), the namespace's default
    route."""

    ifname: str
    address: str
    gateway: str


class Netlink:
    """The host's netlink socket and this thread's way into new namespaces."""

    def __init__(self) -> None:
        from pyroute2.iproute.linux import IPRoute  # ~130 ms to import: only when networked

        self._ipr_class = IPRoute
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.host: IPRoute = IPRoute()

    def close(self) -> None:
        self.host.close()
        os.close(self.home)

    def make(self, plug: Plug) -> int:
        """A new namespace with `lo` up and `eth0` plugged as `plug` says, IPv6 off; returns the
        descriptor that holds it."""
        fd, inside = self._new_namespace()
        try:
            with inside:
                self._plug(fd, inside, plug)
        except BaseException:
            os.close(fd)
            self.remove_links([plug.ifname])
            raise
        return fd

    def _new_namespace(self) -> tuple[int, IPRoute]:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                # /proc/sys/net is the opening thread's namespace: this one, for a moment.
                # The function gets IPv4 only, so no link-local IPv6 path to the host exists.
                for scope in ("all", "default"):
                    _write(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "1")
                inside = self._ipr_class()  # a netlink socket stays in the namespace it was made in
            except BaseException:
                os.close(fd)
                raise
        finally:
            _check(_libc.setns(self.home, CLONE_NEWNET), "setns(home)")
        return fd, inside

    def _plug(self, fd: int, inside: IPRoute, plug: Plug) -> None:
        """Seven netlink requests, each ~0.3 ms of pyroute2: interface indexes are chosen
        rather than looked up, and each point-to-point address (`peer`) brings its own route."""
        host = self.host
        index = _host_index(plug.address)
        peer = {"ifname": SANDBOX_IFNAME, "index": SANDBOX_INDEX, "net_ns_fd": fd}
        try:
            host.link("add", ifname=plug.ifname, index=index, kind="veth", peer=peer)
        except Exception as error:  # NetlinkError EEXIST: the index is taken on this host
            if getattr(error, "code", None) != errno.EEXIST:
                raise
            host.link("add", ifname=plug.ifname, kind="veth", peer=peer)
            index = _index(host, plug.ifname)
        _write(f"/proc/sys/net/ipv6/conf/{plug.ifname}/disable_ipv6", "1")
        host.addr("add", index=index, local=plug.gateway, address=plug.address, prefixlen=32)
        host.link("set", index=index, state="up")
        inside.link("set", index=LOOPBACK_INDEX, state="up")
        inside.addr("add", index=SANDBOX_INDEX, local=plug.address, address=plug.gateway,
                    prefixlen=32)  # fmt: skip
        inside.link("set", index=SANDBOX_INDEX, state="up")
        inside.route("add", dst="0.0.0.0/0", gateway=plug.gateway, oif=SANDBOX_INDEX)

    def links(self, prefix: str) -> list[str]:
        """Names of the host's links that start with `prefix`."""
        names = (link.get_attr("IFLA_IFNAME") for link in self.host.get_links())
        return [name for name in names if isinstance(name, str) and name.startswith(prefix)]

    def remove_links(self, names: Iterable[str]) -> None:
        """Delete host-side veths (their peers go with them); missing ones are fine."""
        for name in names:
            indexes = self.host.link_lookup(ifname=name)
            for index in indexes:
                try:
                    self.host.link("del", index=index)
                except Exception as error:  # pyroute2's NetlinkError: gone meanwhile
                    if getattr(error, "code", None) != 19:  # ENODEV
                        raise


def _host_index(address: str) -> int:
    """The host-side interface index asked for: derived from the sandbox's address, so unique
    among our interfaces, and high, clear of the indexes the kernel hands out."""
    return 0x10000000 | (int(ipaddress.IPv4Address(address)) & 0x0FFFFFFF)


def _index(ipr: Any, ifname: str) -> int:
    indexes = ipr.link_lookup(ifname=ifname)
    if not indexes:
        raise OSError(f"no interface {ifname}")
    return int(indexes[0])


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
