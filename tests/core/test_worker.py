"""BackgroundWorker: newest frame, bounded queue, timeouts, errors, interval."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from framelens import AsyncRunner, BackgroundWorker, Frame


def frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i, time.time())


@pytest.fixture
def runner():  # type: ignore[no-untyped-def]
    r = AsyncRunner()
    r.start()
    yield r
    r.stop()


def test_worker_takes_newest_and_counts_replacements() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def work(f: Frame) -> int:
        gate.wait(5)
        seen.append(f.index)
        return f.index

    results: list[int] = []
    w = BackgroundWorker("t", work, on_result=lambda f, r, s: results.append(r))
    w.start()
    w.submit(frame(0))
    time.sleep(0.1)  # let the worker pick frame 0 and block on the gate
    for i in range(1, 6):
        w.submit(frame(i))
    gate.set()
    deadline = time.time() + 5
    while len(results) < 2 and time.time() < deadline:
        time.sleep(0.01)
    w.close()
    assert seen == [0, 5], "frames 1-4 were replaced by newer ones while the worker was busy"
    assert w.replaced == 4 and w.submitted == 6
    assert w.last_staleness == 0


def test_async_timeout_cancels_and_reports(runner: AsyncRunner) -> None:
    cancelled = threading.Event()
    errors: list[BaseException] = []

    async def slow(f: Frame) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    w = BackgroundWorker("slow", slow, timeout=0.2, runner=runner, on_error=lambda f, e, s: errors.append(e))
    w.start()
    w.submit(frame(1))
    assert cancelled.wait(5), "the coroutine was cancelled at the timeout"
    deadline = time.time() + 5
    while not errors and time.time() < deadline:
        time.sleep(0.01)
    w.close()
    assert isinstance(errors[0], TimeoutError)
    assert w.timeouts == 1 and w.errors == 1


def test_errors_are_reported_and_worker_keeps_going() -> None:
    outcomes: list[str] = []

    def flaky(f: Frame) -> int:
        if f.index == 0:
            raise ValueError("bad frame")
        return f.index

    w = BackgroundWorker("flaky", flaky, on_result=lambda f, r, s: outcomes.append(f"ok {r}"),
                         on_error=lambda f, e, s: outcomes.append(f"err {e}"))
    w.start()
    w.submit(frame(0))
    time.sleep(0.2)
    w.submit(frame(1))
    deadline = time.time() + 5
    while len(outcomes) < 2 and time.time() < deadline:
        time.sleep(0.01)
    w.close()
    assert outcomes == ["err bad frame", "ok 1"]


def test_interval_spaces_calls() -> None:
    starts: list[float] = []
    w = BackgroundWorker("spaced", lambda f: starts.append(time.monotonic()), interval=0.3)
    w.start()
    end = time.time() + 1.0
    i = 0
    while time.time() < end:
        w.submit(frame(i))
        i += 1
        time.sleep(0.01)
    w.close()
    assert 2 <= len(starts) <= 5
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.29


def test_sync_call_over_timeout_is_discarded() -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    w = BackgroundWorker("late", lambda f: time.sleep(0.3) or f.index, timeout=0.1,
                         on_result=lambda f, r, s: results.append(r), on_error=lambda f, e, s: errors.append(e))
    w.start()
    w.submit(frame(7))
    deadline = time.time() + 5
    while not errors and time.time() < deadline:
        time.sleep(0.01)
    w.close()
    assert results == [] and isinstance(errors[0], TimeoutError)
