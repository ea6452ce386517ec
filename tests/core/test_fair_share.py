"""FairShare: a freed slot goes to the longest waiter, so a caller that asks again at once cannot overtake."""

from __future__ import annotations

import asyncio

import pytest

from framelens import FairShare


async def _clients(share: FairShare, n: int, rounds: int, hold: float) -> list[int]:
    order: list[int] = []

    async def client(i: int) -> None:
        for _ in range(rounds):
            async def call() -> None:
                order.append(i)
                await asyncio.sleep(hold)

            await share.run(call())  # asks again the moment its answer is in, as a describer does

    await asyncio.gather(*(client(i) for i in range(n)))
    return order


def test_callers_take_turns_under_contention() -> None:
    share = FairShare(1)
    order = asyncio.run(_clients(share, 4, 5, 0.002))
    assert len(order) == 20
    # Strict turns: every window of four calls has each caller once.
    assert all(sorted(order[i:i + 4]) == [0, 1, 2, 3] for i in range(0, 20, 4)), order
    assert share.in_flight == 0 and share.waiting == 0


def test_limit_and_cancellation_pass_the_slot_on() -> None:
    async def scenario() -> tuple[int, int]:
        share = FairShare(2)
        running = 0
        most = 0

        async def call() -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

        tasks = [asyncio.create_task(share.run(call())) for _ in range(6)]
        await asyncio.sleep(0)
        tasks[4].cancel()  # a waiter that gives up must not keep a slot
        await asyncio.gather(*tasks, return_exceptions=True)
        return most, share.in_flight

    most, left = asyncio.run(scenario())
    assert most == 2 and left == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairShare(0)
