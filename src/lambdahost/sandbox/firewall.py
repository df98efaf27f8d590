"""The nftables rules around one server's function network (node-local state).

Each server owns one table, `inet lambdahost-<tag>`, matching only its own host-side veths
(`lh<tag>.*`), so servers sharing a host never drop each other's traffic. A drop in any
table is final, so the rules only ever drop what comes from or goes to our interfaces:

- to the host itself (input): only the API port and DNS (the forwarder) on the gateway
  address; nothing else on loopback or on any of the host's addresses;
- forwarded (egress): never to another environment, of this server or another, nor to the
  function network's range, nor to the operator's deny-list; IPv4 only;
- into an environment (forward and output): only replies; nothing starts from outside;
- out to the world: masqueraded to the host's address (the NAT path).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

NFT = "/usr/sbin/nft"
TABLE_PREFIX = "lambdahost-"
IFNAME_PREFIX = "lh"  # every server's veths: `lh<tag>.<slot>`


def table_name(tag: str) -> str:
    return f"{TABLE_PREFIX}{tag}"


def ruleset(
    tag: str,
    block: str,
    gateway: str,
    api_port: int,
    dns_port: int,
    network_range: str,
    deny: Sequence[str],
) -> str:
    """The table for the server whose veths are `lh<tag>.*`, addresses in `block`."""
    ours = f'"{IFNAME_PREFIX}{tag}.*"'
    any_env = f'"{IFNAME_PREFIX}*"'
    denied = f"\n    ip daddr {{ {', '.join(deny)} }} drop" if deny else ""
    return f"""table inet {table_name(tag)} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname {ours} jump to_host
  }}
  chain to_host {{
    meta nfproto != ipv4 drop
    ip daddr {gateway} tcp dport {api_port} accept
    ip daddr {gateway} meta l4proto {{ tcp, udp }} th dport {dns_port} accept
    ct state established,related accept
    drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname {ours} jump egress
    oifname {ours} ct state established,related accept
    oifname {ours} drop
  }}
  chain egress {{
    meta nfproto != ipv4 drop
    oifname {any_env} drop
    ip daddr {network_range} drop{denied}
    accept
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
    oifname {ours} ct state established,related accept
    oifname {ours} drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {block} oifname != {any_env} masquerade
  }}
}}
"""


def apply(text: str, tag: str) -> None:
    """Replace the server's table with `text` in one transaction."""
    remove(tag)
    _nft(["-f", "-"], text)


def remove(tag: str) -> None:
    """Delete the table if it exists."""
    _nft(["-f", "-"], f"table inet {table_name(tag)}\ndelete table inet {table_name(tag)}\n")


def tables() -> list[str]:
    """Names of the lambdahost tables on this host."""
    out = _nft(["list", "tables", "inet"])
    names = (line.split()[-1] for line in out.splitlines() if line.startswith("table inet "))
    return [name for name in names if name.startswith(TABLE_PREFIX)]


def _nft(args: list[str], text: str | None = None) -> str:
    try:
        done = subprocess.run(
            [NFT, *args], input=text, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise OSError(f"{NFT} is missing (Debian package nftables)") from None
    if done.returncode != 0:
        raise OSError(f"nft {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout
