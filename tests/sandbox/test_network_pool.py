"""The function network's host side (`sandbox/network.py`): namespaces plugged in ahead,
reused, and nothing left once the server is gone, however it went."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lambdahost.sandbox import firewall
from lambdahost.sandbox.network import FunctionNetwork, NetworkSettings

# A range no server of the other tests uses (they take 100.64.0.0/10's first blocks).
RANGE = "100.127.250.0/24"
TAG = f"{(100 << 16 | 127 << 8 | 250):06x}"


def links(prefix: str = f"lh{TAG}.") -> list[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, check=True).stdout
    return sorted(link["ifname"] for link in json.loads(out) if link["ifname"].startswith(prefix))


def inside(fd: int, *command: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", *command],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def network() -> Iterator[FunctionNetwork]:
    net = FunctionNetwork(NetworkSettings(mode="nat", range=RANGE, api_port=9999, spares=2))
    yield net
    net.close()


def test_a_lease_is_a_plugged_in_namespace(network: FunctionNetwork) -> None:
    async def body() -> None:
        await network.start()
        lease = await network.lease()
        assert network.gateway == "100.127.250.1"
        addresses = json.loads(inside(lease.fd, "ip", "-j", "-4", "addr"))
        by_name = {link["ifname"]: link["addr_info"] for link in addresses}
        assert [a["local"] for a in by_name["eth0"]] == [lease.address]
        assert by_name["lo"][0]["local"] == "127.0.0.1"
        routes = inside(lease.fd, "ip", "route")
        assert f"default via {network.gateway} dev eth0" in routes
        assert inside(lease.fd, "ip", "-6", "addr") == ""  # no IPv6 path to the host
        assert lease.plug.ifname in links()
        network.release(lease)
        again = await network.lease()  # a released namespace comes back, plugged in
        assert again.plug.ifname in links()

    asyncio.run(body())


def test_spares_are_made_ahead_and_reused(network: FunctionNetwork) -> None:
    async def body() -> None:
        await network.start()
        for _ in range(100):
            if len(links()) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(links()) == 2  # settings.spares, made while idle
        leases = [await network.lease() for _ in range(3)]  # the third is made on demand
        assert len({lease.address for lease in leases}) == 3
        for lease in leases:
            network.release(lease)
        reused = await network.lease()
        assert reused.address == leases[0].address  # the longest idle first

    asyncio.run(body())


def test_close_leaves_nothing(network: FunctionNetwork) -> None:
    async def body() -> None:
        await network.start()
        await network.lease()

    asyncio.run(body())
    assert f"{firewall.TABLE_PREFIX}{TAG}" in firewall.tables()
    network.close()
    assert links() == []
    assert f"{firewall.TABLE_PREFIX}{TAG}" not in firewall.tables()
    FunctionNetwork(NetworkSettings(mode="nat", range=RANGE)).close()  # the block is free again


def test_a_killed_servers_leftovers_are_removed() -> None:
    code = (
        "import asyncio, sys, time\n"
        "from lambdahost.sandbox.network import FunctionNetwork, NetworkSettings\n"
        f"net = FunctionNetwork(NetworkSettings(mode='nat', range={RANGE!r}))\n"
        "async def main():\n"
        "    await net.start()\n"
        "    await net.lease()\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert links()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert f"{firewall.TABLE_PREFIX}{TAG}" in firewall.tables()  # left behind
    # The next server to claim another block removes it (the dead one's lock is free).
    other = FunctionNetwork(NetworkSettings(mode="nat", range="100.127.251.0/24"))
    try:
        assert other.cleanup_stale() >= 1
        assert f"{firewall.TABLE_PREFIX}{TAG}" not in firewall.tables()
        assert links() == []  # the veths died with the namespaces their process held
    finally:
        other.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        NetworkSettings(mode="bridge")
    with pytest.raises(ValueError):
        NetworkSettings(range="fd00::/64")
    with pytest.raises(ValueError):
        NetworkSettings(range="100.64.0.0/28")  # smaller than one block
    with pytest.raises(ValueError):
        NetworkSettings(deny=("not-a-cidr",))
