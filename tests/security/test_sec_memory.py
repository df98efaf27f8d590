"""Isolation breaks 1 and 3 of the red-team pass: one function must never find another's
secrets in the memory it inherited, and must not reach into its own agent (PID 1)."""

from __future__ import annotations

import json
import os
import time

from helpers import Server, create_function, make_zip, unique

PREFIX = "LHCANARY-"
ROUNDS = 50

# The attacker: reads every readable mapping of its own process and of every process it can
# see, and reports each PREFIX-tagged token it finds, and what it could open of PID 1.
SCANNER = f"""
import os, re

PREFIX = {PREFIX!r}.encode()
TOKEN = re.compile(re.escape(PREFIX) + rb"[0-9a-f]{{32}}")


def scan(pid):
    found = set()
    try:
        maps = open(f"/proc/{{pid}}/maps").read().splitlines()
        mem = open(f"/proc/{{pid}}/mem", "rb", buffering=0)
    except OSError as error:
        return None, type(error).__name__
    with mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            if end - start > 256 << 20:
                continue
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            found.update(t.decode() for t in TOKEN.findall(data))
    return sorted(found), "opened"


def handler(event, context):
    report = {{}}
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        tokens, status = scan(pid)
        report[str(pid)] = {{"tokens": tokens, "mem": status}}
    try:
        open("/proc/1/mem", "r+b").close()
        report["pid1_write"] = "opened"
    except OSError as error:
        report["pid1_write"] = type(error).__name__
    try:
        open("/proc/1/environ", "rb").read()
        report["pid1_environ"] = "read"
    except OSError as error:
        report["pid1_environ"] = type(error).__name__
    report["self_pid"] = os.getpid()
    return report
"""
VICTIM = make_zip({"app.py": "import os\ndef handler(event, context):\n    return 'ok'\n"})


def test_no_function_finds_another_functions_secret(server_per_backend: Server) -> None:
    lam = server_per_backend.client("lambda")
    scanner_zip = make_zip({"app.py": SCANNER})
    victims, scanners, canaries = [], [], []
    for _ in range(ROUNDS):
        canary = PREFIX + os.urandom(16).hex()
        victim = unique("victim")
        create_function(
            lam, victim, VICTIM, wait=False, Environment={"Variables": {"SECRET": canary}}
        )
        # Two attackers per victim: the zygote keeps sandboxes forked ahead, so the first
        # may start from one forked before the victim; the second starts from one after.
        pair = [unique("scanner"), unique("scanner")]
        for scanner in pair:
            create_function(lam, scanner, scanner_zip, wait=False, MemorySize=256, Timeout=30)
        victims.append(victim)
        scanners.append(pair)
        canaries.append(canary)
    waiter = lam.get_waiter("function_active_v2")
    for name in victims + [name for pair in scanners for name in pair]:
        waiter.wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    leaked: list[str] = []
    seen_self = 0
    for victim, pair in zip(victims, scanners, strict=True):
        assert lam.invoke(FunctionName=victim)["StatusCode"] == 200  # cold start of the victim
        for scanner in pair:
            leaked += _attack(lam, scanner, canaries)
            seen_self += 1
    assert seen_self == 2 * ROUNDS
    assert not leaked, f"found other functions' secrets: {leaked[:3]}"
    assert "Traceback" not in server_per_backend.log()


def _attack(lam, scanner: str, canaries: list[str]) -> list[str]:  # noqa: ANN001
    """Cold-start the scanner; returns the canaries it found. Also checks finding 3."""
    time.sleep(0.05)  # let the zygote refill what it keeps ready, as between real requests
    response = lam.invoke(FunctionName=scanner)
    assert "FunctionError" not in response, response["Payload"].read()
    report = json.loads(response["Payload"].read())
    own = report[str(report["self_pid"])]
    assert own["mem"] == "opened"  # the scanner did read its own memory
    leaked = []
    for entry in report.values():
        if isinstance(entry, dict) and entry["tokens"]:
            leaked += [token for token in entry["tokens"] if token in canaries]
    # Finding 3: the agent is out of the function's reach.
    assert report["1"]["mem"] == "PermissionError", report["1"]
    assert report["pid1_write"] == "PermissionError"
    assert report["pid1_environ"] == "PermissionError"
    return leaked
