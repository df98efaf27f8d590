"""Finding 7 of the red-team pass: per-uid kernel limits must not couple functions, so each
sandbox runs as a host uid of its own, handed out again only once its sandbox is gone."""

from __future__ import annotations

import json
import threading

import pytest
from helpers import Server, create_function, make_zip, unique

from lambdahost.sandbox.uids import UidPool

# Takes every inotify instance its uid may have (fs.inotify.max_user_instances), holds them
# for a while; then says how many it got and whether one more could be had.
HOARDER = make_zip(
    {
        "app.py": """
import ctypes, os, time

libc = ctypes.CDLL(None, use_errno=True)

def handler(event, context):
    held = []
    while len(held) < 4096:
        fd = libc.inotify_init1(0)
        if fd < 0:
            break
        held.append(fd)
    time.sleep(event.get("hold", 0))
    for fd in held:
        os.close(fd)
    return {"held": len(held), "uid": os.getuid()}
"""
    }
)


def test_one_function_exhausting_a_per_uid_limit_does_not_affect_another(
    server_per_backend: Server,
) -> None:
    lam = server_per_backend.client("lambda")
    hoarder, other = unique("hoarder"), unique("other")
    create_function(lam, hoarder, HOARDER, Timeout=30)
    create_function(lam, other, HOARDER, Timeout=30)
    results: dict[str, dict] = {}

    def hoard() -> None:
        response = lam.invoke(FunctionName=hoarder, Payload=b'{"hold": 4}')
        results["hoarder"] = json.loads(response["Payload"].read())

    thread = threading.Thread(target=hoard)
    thread.start()
    try:
        import time

        time.sleep(2)  # the hoarder holds every instance its uid may have
        response = lam.invoke(FunctionName=other, Payload=b'{"hold": 0}')
        results["other"] = json.loads(response["Payload"].read())
    finally:
        thread.join(60)
    limit = int(open("/proc/sys/fs/inotify/max_user_instances").read())
    assert results["hoarder"]["held"] == limit, results
    assert results["other"]["held"] == limit, results  # its own uid: its own limit
    assert results["hoarder"]["uid"] != results["other"]["uid"]


def test_uids_are_reused_only_after_release() -> None:
    pool = UidPool(5000, 5002)
    first, second = pool.acquire(), pool.acquire()
    assert (first, second) == (5000, 5001)
    pool.release(first)
    assert pool.acquire() == 5000  # lowest free first: few distinct uids, few /etc dirs
    assert pool.acquire() == 5002
    with pytest.raises(Exception, match="in use"):
        pool.acquire()
    pool.release(5001)
    pool.release(5001)  # twice is harmless
    assert pool.acquire() == 5001
