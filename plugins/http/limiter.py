"""A cap on concurrent backend requests, with a bounded, time-limited wait queue."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from .errors import ApiError

__all__ = ["Limiter"]


class Limiter:
    """At most ``concurrency`` requests run; at most ``max_queue`` wait, each for at most ``timeout`` s.

    A request that finds the queue full, or waits too long, gets a 429 with
    ``Retry-After`` instead of piling up on a backend that answers one at a time
    (Ollama's default ``OLLAMA_NUM_PARALLEL`` is 1).

    Waiters are served first come, first served. Every step is O(1) in the
    number of waiters (``asyncio.Semaphore.locked()`` scans them all, on every
    request once the queue is long), except a waiter that gives up, which
    leaves the queue by a scan.
    """

    def __init__(self, concurrency: int, max_queue: int, timeout: float) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.timeout = timeout
        self.running = 0
        self.waiting = 0
        self._free = concurrency
        # True: a released slot was handed to this waiter; False: its time ran out.
        self._waiters: deque[asyncio.Future[bool]] = deque()

    def _busy(self, why: str) -> ApiError:
        retry = max(1, round(self.timeout / 4))
        return ApiError(429, f"too many requests in flight ({self.running} running, {self.waiting} waiting); {why}",
                        code="rate_limit_exceeded", headers={"Retry-After": str(retry)})

    def slot(self) -> _Slot:
        """Hold one of the backend's slots for the ``async with`` block."""
        return _Slot(self)

    async def _acquire(self) -> None:
        if self._free:
            # Free slots only exist while nobody waits: release() hands a slot to a waiter first.
            self._free -= 1
            self.running += 1
            return
        if self.waiting >= self.max_queue:
            raise self._busy("the wait queue is full")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        timer = loop.call_later(self.timeout, _expire, waiter)
        try:
            granted = await waiter
        except BaseException:
            # Cancelled while waiting; a slot handed over in the same instant goes to the next in line.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()
            else:
                self._forget(waiter)
            raise
        finally:
            timer.cancel()
            self.waiting -= 1
        if not granted:
            self._forget(waiter)
            raise self._busy(f"no slot within {self.timeout:g} s")
        self.running += 1

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass  # release() already took it off the queue

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot changes hands: the count of free slots stays
                return
        self._free += 1


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class _Slot:
    """``async with limiter.slot():`` (a plain class: cheaper per request than ``asynccontextmanager``)."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        await self._limiter._acquire()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._limiter.running -= 1
        self._limiter._release()
