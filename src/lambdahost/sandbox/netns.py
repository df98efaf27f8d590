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
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute

CLONE_NEWNET = 0x40000000
RT_SCOPE_LINK = 253
SANDBOX_IFNAME = "eth0"  # what the function sees, as in a Lambda environment

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
        host = self.host
        host.link("add", ifname=plug.ifname, kind="veth",
                  peer={"ifname": SANDBOX_IFNAME, "net_ns_fd": fd})  # fmt: skip
        index = _index(host, plug.ifname)
        _write(f"/proc/sys/net/ipv6/conf/{plug.ifname}/disable_ipv6", "1")
        host.addr("add", index=index, address=plug.gateway, prefixlen=32)
        host.link("set", index=index, state="up")
        host.route("add", dst=f"{plug.address}/32", oif=index)
        inside.link("set", index=_index(inside, "lo"), state="up")
        eth = _index(inside, SANDBOX_IFNAME)
        inside.addr("add", index=eth, address=plug.address, prefixlen=32)
        inside.link("set", index=eth, state="up")
        inside.route("add", dst=f"{plug.gateway}/32", oif=eth, scope=RT_SCOPE_LINK)
        inside.route("add", dst="0.0.0.0/0", gateway=plug.gateway, oif=eth)

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


def _index(ipr: Any, ifname: str) -> int:
    indexes = ipr.link_lookup(ifname=ifname)
    if not indexes:
        raise OSError(f"no interface {ifname}")
    return int(indexes[0])


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
