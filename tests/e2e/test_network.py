"""Function networking (`--function-network`): outbound IPv4 through the host with NAT, DNS
through the host's (loopback) resolver, the platform's API, and nothing else of the host nor
of other environments. The peers live in network namespaces this test makes itself."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Server, create_function, make_zip, start_server, unique
from netpeers import WEB_BODY, DnsServer, WebHost, web_host

DNS_ADDRESS = "127.0.0.77"  # a loopback resolver, as systemd-resolved's 127.0.0.53
WEB_NAME = "web.lambdahost.test"

PROBE = """
import json, os, socket, struct, fcntl, time, urllib.request, urllib.error

def own_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("256s", b"eth0")
        try:
            return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, request)[20:24])
        except OSError:
            return None  # no eth0: the isolated mode

def connect(host, port, timeout=1.0):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as error:
        return type(error).__name__
    finally:
        s.close()

def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except Exception as error:
        return f"error: {error!r}"

def listen(port, seconds):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen()
    server.settimeout(seconds)
    accepted = []
    deadline = time.monotonic() + seconds
    socket.create_connection((own_address(), port), timeout=1).close()  # it does listen
    while time.monotonic() < deadline:
        try:
            conn, peer = server.accept()
        except socket.timeout:
            break
        accepted.append(peer[0])
        conn.close()
    server.close()
    return accepted

def handler(event, context):
    action = event["action"]
    if action == "fetch":
        return {"body": fetch(event["url"])}
    if action == "connect":
        return {"result": connect(event["host"], event["port"], event.get("timeout", 1.0))}
    if action == "listen":
        return {"address": own_address(), "accepted": listen(event["port"], event["seconds"])}
    if action == "whoami":
        return {
            "address": own_address(),
            "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "interfaces": [name for _, name in socket.if_nameindex()],
            "resolv": open("/etc/resolv.conf").read(),
        }
    if action == "resolve":
        try:
            return {"address": socket.gethostbyname(event["name"])}
        except OSError as error:
            return {"error": repr(error)}
    raise ValueError(action)
"""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHost]:
    with web_host(tmp_path_factory.mktemp("web")) as host:
        yield host


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    server = DnsServer(DNS_ADDRESS, {WEB_NAME: "198.51.100.10"})
    yield server
    server.close()


@pytest.fixture(scope="module")
def nat_server(
    tmp_path_factory: pytest.TempPathFactory, web: WebHost, dns: DnsServer
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("nat") / "data", env={"LAMBDAHOST_FUNCTION_DNS": DNS_ADDRESS}
    )
    yield server
    server.kill()


def invoke(lam: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    payload: dict[str, Any] = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


def probe_function(lam: Any, prefix: str = "net") -> str:
    name = unique(prefix)
    create_function(lam, name, make_zip({"app.py": PROBE}), Timeout=30)
    return name


def test_function_fetches_from_a_host_outside_through_nat(nat_server: Server, web: WebHost) -> None:
    lam = nat_server.client()
    name = probe_function(lam)
    assert invoke(lam, name, {"action": "fetch", "url": web.url}) == {"body": WEB_BODY}
    facts = invoke(lam, name, {"action": "whoami"})
    assert facts["interfaces"] == ["lo", "eth0"]
    assert ipaddress.ip_address(facts["address"]) in ipaddress.ip_network("100.64.0.0/10")
    gateway = facts["endpoint"].removeprefix("http://").rsplit(":", 1)[0]
    assert facts["endpoint"] == f"http://{gateway}:{nat_server.port}"


def test_dns_goes_through_the_host_to_a_loopback_resolver(
    nat_server: Server, web: WebHost, dns: DnsServer
) -> None:
    lam = nat_server.client()
    name = probe_function(lam)
    facts = invoke(lam, name, {"action": "whoami"})
    gateway = facts["endpoint"].removeprefix("http://").rsplit(":", 1)[0]
    assert f"nameserver {gateway}" in facts["resolv"]  # never the host's loopback resolver
    assert invoke(lam, name, {"action": "resolve", "name": WEB_NAME}) == {
        "address": "198.51.100.10"
    }
    assert WEB_NAME in dns.queries
    url = f"http://{WEB_NAME}:{web.port}/"
    assert invoke(lam, name, {"action": "fetch", "url": url}) == {"body": WEB_BODY}


def test_the_api_is_reachable_and_nothing_else_of_the_host(nat_server: Server) -> None:
    lam = nat_server.client()
    name = probe_function(lam)
    endpoint = invoke(lam, name, {"action": "whoami"})["endpoint"]
    gateway = endpoint.removeprefix("http://").rsplit(":", 1)[0]
    # The API answers (unsigned: 403) at the endpoint the SDKs are given.
    listing = invoke(lam, name, {"action": "fetch", "url": f"{endpoint}/2015-03-31/functions"})
    assert listing["body"] in ("HTTP 403", "HTTP 401"), listing
    # A host service on loopback, on the host's own addresses and on the gateway: unreachable.
    with _host_listener() as port:
        for host in ("127.0.0.1", gateway, _host_address()):
            result = invoke(lam, name, {"action": "connect", "host": host, "port": port})
            assert result["result"] != "connected", (host, result)
        # ... while the host itself can reach it (the listener works).
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_nothing_reaches_an_environment(nat_server: Server, web: WebHost) -> None:
    """Not another environment, not the host, not a host outside (routed through this one)."""
    lam = nat_server.client()
    listener, caller = probe_function(lam, "net-a"), probe_function(lam, "net-b")
    port = 7777
    result: dict[str, Any] = {}

    def listen() -> None:
        result.update(invoke(lam, listener, {"action": "listen", "port": port, "seconds": 10}))

    # Its one warm environment answers both invokes: the address is the listener's.
    address = invoke(lam, listener, {"action": "whoami"})["address"]
    thread = threading.Thread(target=listen)
    thread.start()
    time.sleep(1.5)  # the listen invoke has started (a late connect only fails the same way)
    attempt = invoke(lam, caller, {"action": "connect", "host": address, "port": port})
    from_host = _connect_from(None, address, port)
    from_outside = _connect_from(web.netns, address, port)
    thread.join(30)
    assert attempt["result"] == "timeout", attempt
    assert from_host != "connected" and from_outside != "connected", (from_host, from_outside)
    assert result["address"] == address
    assert result["accepted"] == [address]  # only its own check connection came through


def _connect_from(netns: str | None, address: str, port: int) -> str:
    """Try a TCP connection from the host, or from a test namespace: its outcome."""
    code = (
        "import socket\ns = socket.socket(); s.settimeout(1.5)\n"
        f"try:\n    s.connect(({address!r}, {port})); print('connected')\n"
        "except OSError as e:\n    print(type(e).__name__)\n"
    )
    prefix = ["ip", "netns", "exec", netns] if netns else []
    done = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip()


def _host_address() -> str:
    """One of the host's own global IPv4 addresses, not a test peer's nor a gateway."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"],
                         capture_output=True, check=True).stdout  # fmt: skip
    for link in json.loads(out):
        for entry in link.get("addr_info", []):
            address = ipaddress.ip_address(entry["local"])
            peers = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("198.51.100.0/24"))
            if not any(address in network for network in peers):
                return str(address)
    pytest.skip("the host has no global IPv4 address of its own")


class _host_listener:
    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def test_isolated_mode_has_no_network(tmp_path: Path, web: WebHost) -> None:
    server = start_server(tmp_path / "data", "--function-network", "isolated")
    try:
        lam = server.client()
        name = probe_function(lam)
        body = invoke(lam, name, {"action": "fetch", "url": web.url})["body"]
        assert body.startswith("error:"), body
        facts = invoke(lam, name, {"action": "whoami"})
        assert facts["interfaces"] == ["lo"]
        assert facts["endpoint"] is None
    finally:
        server.kill()


def test_egress_deny_list(tmp_path: Path, web: WebHost) -> None:
    server = start_server(tmp_path / "data", "--egress-deny", "198.51.100.0/24")
    try:
        lam = server.client()
        name = probe_function(lam)
        result = invoke(lam, name, {"action": "connect", "host": web.address, "port": web.port})
        assert result["result"] == "timeout", result
    finally:
        server.kill()


def test_bwrap_sandboxes_get_the_same_network(tmp_path: Path, web: WebHost) -> None:
    server = start_server(tmp_path / "data", env={"LAMBDAHOST_SANDBOX": "bwrap"})
    try:
        lam = server.client()
        name = probe_function(lam)
        assert invoke(lam, name, {"action": "fetch", "url": web.url}) == {"body": WEB_BODY}
        facts = invoke(lam, name, {"action": "whoami"})
        assert facts["interfaces"] == ["lo", "eth0"]
        assert facts["endpoint"].endswith(f":{server.port}")
    finally:
        server.kill()


def test_nothing_of_the_network_is_left_after_stop(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    try:
        lam = server.client()
        name = probe_function(lam)
        endpoint = invoke(lam, name, {"action": "whoami"})["endpoint"]
        gateway = ipaddress.ip_address(endpoint.removeprefix("http://").rsplit(":", 1)[0])
        tag = f"{(int(gateway) - 1) >> 8:06x}"
        assert _links(f"lh{tag}.")  # the environment's, and the spares
        assert f"lambdahost-{tag}" in _tables()
    finally:
        server.kill()
    assert _links(f"lh{tag}.") == []
    assert f"lambdahost-{tag}" not in _tables()


def _links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, check=True).stdout
    return [link["ifname"] for link in json.loads(out) if link["ifname"].startswith(prefix)]


def _tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
