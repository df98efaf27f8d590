"""The accounting under the host's budgets, on its own: the cold-start line keeps its order and
its bounds (also when a caller gives up), and eviction picks the least recently used."""

from __future__ import annotations

import asyncio

import pytest

from lambdahost.errors import TooManyRequests
from lambdahost.invoke.capacity import HostCapacity, Need, StartGate, budget_mb, pick_victims


def test_gate_is_first_in_first_out_and_bounded() -> None:
    async def main() -> None:
        gate = StartGate(limit=1, max_waiting=2, max_wait_s=5.0)
        first = await gate.enter()
        order: list[int] = []

        async def wait(index: int) -> None:
            slot = await gate.enter()
            order.append(index)
            slot.leave()

        waiters = [asyncio.create_task(wait(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(TooManyRequests) as full:
            await gate.enter()  # the line is full
        assert full.value.extra["Reason"] == "ConcurrentInvocationLimitExceeded"
        first.leave()
        first.leave()  # idempotent: one slot, handed on once
        await asyncio.gather(*waiters)
        assert order == [0, 1]
        assert gate.running == 0 and gate.waiting == 0

    asyncio.run(main())


def test_gate_wait_is_bounded_and_giving_up_frees_the_place() -> None:
    async def main() -> None:
        gate = StartGate(limit=1, max_waiting=5, max_wait_s=0.05)
        held = await gate.enter()
        with pytest.raises(TooManyRequests):
            await gate.enter()  # waited 50 ms: refused
        cancelled = asyncio.create_task(gate.enter())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert gate.waiting == 0
        held.leave()
        assert gate.running == 0
        again = await gate.enter()  # nothing leaked: the slot is free
        again.leave()

    asyncio.run(main())


def test_budgets_and_victims() -> None:
    capacity = HostCapacity(memory_mb=1024, disk_mb=2048)
    capacity.hold("a", Need(512, 512))
    capacity.hold("b", Need(512, 512))
    assert capacity.shortfall(Need(512, 512)) == Need(512, 0)
    assert capacity.exceeds_budget(Need(2048, 512))
    capacity.release("a")
    capacity.release("a")  # twice is harmless
    assert capacity.memory_held == 512 and capacity.disk_held == 512
    idle = [(3.0, Need(256, 512), "new"), (1.0, Need(128, 512), "old"), (2.0, Need(512, 0), "mid")]
    assert pick_victims(idle, Need(600, 0)) == ["old", "mid"]
    assert pick_victims(idle, Need(0, 600)) == ["old", "new"]  # "mid" frees no disk
    assert pick_victims(idle, Need(2000, 0)) is None
    assert budget_mb("50%", lambda: 1000) == (500, 0.5)
    assert budget_mb("300", lambda: 1000) == (300, None)
