"""Function networking, like the VPC Lambda's service owns: one interface per environment,
a private address, outbound IPv4 through the host with NAT, DNS through the host, nothing in.

`isolated` mode (today's behaviour before this existed) gives each sandbox a network namespace
holding only `lo`; the backends do that themselves. `nat` mode, the default, is this module:

    sandbox netns: eth0 100.64.0.5/32, default via 100.64.0.1
         │ veth
    host: lh<tag>.004 (holds 100.64.0.1/32, route 100.64.0.5/32) ─ nftables ─ NAT ─▶ world

Everything here is node-local state: the namespaces, veths, the nftables table and the
address block. A server claims one block of the range (`/run/lambdahost/net/<tag>.lock`,
flock: freed when the server dies) so that servers on one host never share an address; its
first address is the gateway every sandbox of the server routes through, where the server
also answers DNS (`dns.py`) and, through the firewall's one exception, its API.

Creating a namespace with its veth costs ~5 ms and removing it ~20 ms here, so both happen
on a dedicated thread, off the cold-start path: a few namespaces wait plugged in ahead of
time, and a sandbox's namespace is reused by a later sandbox once nothing of it runs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import fcntl
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lambdahost.sandbox import firewall
from lambdahost.sandbox.api import SandboxError
from lambdahost.sandbox.dns import DNS_PORT, DnsForwarder
from lambdahost.sandbox.netns import Netlink, Plug

log = logging.getLogger("lambdahost.sandbox")

MODES = ("nat", "isolated")
# RFC 6598's shared address space (carrier-grade NAT): rarely used on LANs or by cloud VPCs,
# so functions can still reach the user's 10/8, 172.16/12 and 192.168/16 networks.
DEFAULT_RANGE = "100.64.0.0/10"
# Link-local: cloud metadata services (169.254.169.254) would hand functions the host's
# own cloud credentials.
DEFAULT_DENY = ("169.254.0.0/16",)
BLOCK_PREFIX = 20  # one server's share of the range: 4093 environments
SMALLEST_BLOCK = 24
LOCK_DIR = Path("/run/lambdahost/net")
SPARES = 32  # namespaces kept plugged in ahead of cold starts
# Spares are made only once no sandbox has started for this long: making one is ~5 ms of
# netlink work in Python, which would compete with a starting sandbox for the GIL and CPU.
REFILL_IDLE_S = 0.05
# ... and only once fewer than this many are left: a sandbox gives its namespace back when it
# ends, so steady cold starts (an update, then a new environment) need no new ones at all.
REFILL_BELOW = 8
KEEP_IDLE = 64  # released namespaces kept for reuse; more are removed
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass(frozen=True)
class NetworkSettings:
    """The operator's choice (`--function-network`, `--function-network-range`,
    `--egress-deny`); `api_port` is the server's, the one host port sandboxes may reach."""

    mode: str = "isolated"
    range: str = DEFAULT_RANGE
    deny: tuple[str, ...] = DEFAULT_DENY
    api_port: int = 0
    dns: tuple[str, ...] = ()  # upstream resolvers; empty: the host's resolv.conf
    spares: int = SPARES

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"function network mode must be one of {', '.join(MODES)}")
        network = ipaddress.ip_network(self.range)  # ValueError names the problem
        if network.version != 4 or network.prefixlen > SMALLEST_BLOCK:
            raise ValueError(
                f"the function network range must be IPv4, /{SMALLEST_BLOCK} or larger"
            )
        for cidr in self.deny:
            ipaddress.ip_network(cidr)
        for resolver in self.dns:
            ipaddress.ip_address(resolver)


@dataclass
class NetworkLease:
    """One plugged-in namespace, held by `fd`, lent to one sandbox at a time."""

    slot: int
    fd: int
    plug: Plug

    @property
    def address(self) -> str:
        return self.plug.address


class FunctionNetwork:
    """The `nat` mode of one server. Construct (blocking: claims a block, writes the
    firewall), `await start()` on the loop, `lease()` per sandbox, `release()` once nothing of
    that sandbox runs, `close()` at the end."""

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self._lock_fd, block, self.tag = _claim_block(settings.range)
        self.block = block
        self.gateway = str(block.network_address + 1)
        self._slots = collections.deque(range(1, block.num_addresses - 2))
        self._free: collections.deque[NetworkLease] = collections.deque()
        self._lent: dict[int, NetworkLease] = {}
        self._mutex = threading.Lock()  # _slots, _free, _lent: the loop and the worker share them
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "lambdahost-net")
        self._closed = False
        self._making = False  # a spare is being made on the worker
        self._topping_up = False  # making spares until `settings.spares` are free
        self._last_lease = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dns = DnsForwarder(self.gateway, settings.dns)
        netlink: Netlink | None = None
        try:
            netlink = self._worker.submit(Netlink).result()
            netlink.remove_links(netlink.links(self._ifname_prefix))
            firewall.apply(self._ruleset(), self.tag)
            _enable_forwarding()
        except BaseException as error:
            if netlink is not None:
                self._worker.submit(netlink.close).result()
            self._worker.shutdown()
            os.close(self._lock_fd)
            if isinstance(error, OSError):
                raise SandboxError(
                    f"cannot set up function networking: {error} (the isolated function "
                    "network needs none of it)"
                ) from error
            raise
        self._netlink = netlink

    @property
    def _ifname_prefix(self) -> str:
        return f"{firewall.IFNAME_PREFIX}{self.tag}."

    def _ruleset(self) -> str:
        return firewall.ruleset(
            self.tag, str(self.block), self.gateway, self.settings.api_port, DNS_PORT,
            self.settings.range, self.settings.deny,
        )  # fmt: skip

    @property
    def resolv_conf(self) -> str:
        return f"nameserver {self.gateway}\noptions timeout:2 attempts:2\n"

    async def start(self) -> None:
        """Start the DNS forwarder and plug in the first spares."""
        self._loop = asyncio.get_running_loop()
        await self._dns.start()
        self._refill_soon()

    async def lease(self) -> NetworkLease:
        """A plugged-in namespace: a spare at once, else one made now (~5 ms)."""
        with self._mutex:
            lease = self._free.popleft() if self._free else None
            if lease is not None:
                self._lent[lease.slot] = lease
        self._last_lease = time.monotonic()
        if lease is None:
            loop = asyncio.get_running_loop()
            lease = await loop.run_in_executor(self._worker, self._make, True)
        self._refill_soon()
        return lease

    def release(self, lease: NetworkLease) -> None:
        """Give a sandbox's namespace back; only once none of its processes runs."""
        with self._mutex:
            if self._lent.pop(lease.slot, None) is None:
                return
            if len(self._free) < KEEP_IDLE:
                self._free.append(lease)  # FIFO: the longest-idle namespace is reused first
                return
        self._worker.submit(self._remove, lease)

    def close(self) -> None:
        """Remove every namespace, veth and rule of this server; release the block.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._dns.close()
        with self._mutex:
            leases = [*self._free, *self._lent.values()]
            self._free.clear()
            self._lent.clear()
        try:
            self._worker.submit(self._close_netlink, leases).result()
        finally:
            self._worker.shutdown()
            with contextlib.suppress(OSError):
                firewall.remove(self.tag)
            os.close(self._lock_fd)

    def cleanup_stale(self) -> int:
        """Remove the tables and veths of servers that died (their block's lock is free);
        returns how many servers' leftovers were removed."""
        tables = {name.removeprefix(firewall.TABLE_PREFIX) for name in firewall.tables()}
        links = self._worker.submit(self._netlink.links, firewall.IFNAME_PREFIX).result()
        by_tag: dict[str, list[str]] = {}
        for name in links:
            tag, dot, _ = name.removeprefix(firewall.IFNAME_PREFIX).partition(".")
            if dot:
                by_tag.setdefault(tag, []).append(name)
        stale = {tag for tag in tables | set(by_tag) if tag != self.tag and _block_free(tag)}
        for tag in stale:
            with contextlib.suppress(OSError):
                firewall.remove(tag)
            if by_tag.get(tag):
                self._worker.submit(self._netlink.remove_links, by_tag[tag]).result()
        return len(stale)

    # -- on the worker thread ------------------------------------------------------------------
    def _make(self, lend: bool) -> NetworkLease:
        with self._mutex:
            if not self._slots:
                raise SandboxError(f"every address of {self.block} is in use")
            slot = self._slots.popleft()
        plug = Plug(
            ifname=f"{self._ifname_prefix}{slot:03x}",
            address=str(self.block.network_address + 1 + slot),
            gateway=self.gateway,
        )
        try:
            fd = self._netlink.make(plug)
        except BaseException as error:
            with self._mutex:
                self._slots.append(slot)
            if isinstance(error, OSError):
                raise SandboxError(f"cannot plug in a network namespace: {error}") from error
            raise
        lease = NetworkLease(slot, fd, plug)
        with self._mutex:
            if lend:
                self._lent[slot] = lease
            else:
                self._free.append(lease)
        return lease

    # -- spares, on the loop: one at a time, only while no sandbox starts ----------------------
    def _refill_soon(self, delay: float = REFILL_IDLE_S) -> None:
        loop = self._loop
        if loop is None or self._timer is not None or self._making:
            return
        self._timer = loop.call_later(delay, self._refill_tick)

    def _refill_tick(self) -> None:
        self._timer = None
        busy_for = REFILL_IDLE_S - (time.monotonic() - self._last_lease)
        if busy_for > 0:
            self._refill_soon(busy_for)
            return
        with self._mutex:
            free = len(self._free)
            if free >= self.settings.spares or not self._slots:
                self._topping_up = False
                return
            if free >= min(REFILL_BELOW, self.settings.spares) and not self._topping_up:
                return
            self._topping_up = True  # until `spares` are free again
        self._making = True
        self._worker.submit(self._make, False).add_done_callback(self._made)

    def _made(self, future: concurrent.futures.Future[NetworkLease]) -> None:
        """On the worker: the spare is in `_free` (or failed); go on from the loop."""
        error = future.exception()
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def go_on() -> None:
            self._making = False
            if error is not None:
                log.warning("cannot make a spare network namespace: %s", error)
                return  # the next lease makes its own, and tries again afterwards
            self._refill_soon(0)

        loop.call_soon_threadsafe(go_on)

    def _remove(self, lease: NetworkLease) -> None:
        try:
            self._netlink.remove_links([lease.plug.ifname])
        finally:
            os.close(lease.fd)
            with self._mutex:
                self._slots.append(lease.slot)

    def _close_netlink(self, leases: list[NetworkLease]) -> None:
        try:
            self._netlink.remove_links(self._netlink.links(self._ifname_prefix))
        finally:
            for lease in leases:
                os.close(lease.fd)
            self._netlink.close()


def _claim_block(range_: str) -> tuple[int, ipaddress.IPv4Network, str]:
    network = ipaddress.IPv4Network(range_)
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for block in network.subnets(new_prefix=max(network.prefixlen, BLOCK_PREFIX)):
        tag = _tag(block)
        fd = os.open(LOCK_DIR / f"{tag}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd, block, tag
    raise SandboxError(f"every block of the function network range {range_} is in use")


def _tag(block: ipaddress.IPv4Network) -> str:
    """Names the block's veths and table: unique for blocks of /24 or larger."""
    return f"{int(block.network_address) >> 8:06x}"


def _block_free(tag: str) -> bool:
    path = LOCK_DIR / f"{tag}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also drops the lock we may have taken
    return True


def _enable_forwarding() -> None:
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1")
        log.info("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for function networking")
