"""A cap on concurrent backend requests, with a bounded, time-limited wait queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import ApiError

__all__ = ["Limiter"]


class Limiter:
    """At most ``concurrency`` requests run; at most ``max_queue`` wait, each for at most ``timeout`` s.

    A request that finds the queue full, or waits too long, gets a 429 with
    ``Retry-After`` instead of piling up on a backend that answers one at a time
    (Ollama's default ``OLLAMA_NUM_PARALLEL`` is 1).
    """

    def __init__(self, concurrency: int, max_queue: int, timeout: float) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.timeout = timeout
        self.running = 0
        self.waiting = 0
        self._sem = asyncio.Semaphore(concurrency)

    def _busy(self, why: str) -> ApiError:
        retry = max(1, round(self.timeout / 4))
        return ApiError(429, f"too many requests in flight ({self.running} running, {self.waiting} waiting); {why}",
                        code="rate_limit_exceeded", headers={"Retry-After": str(retry)})

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the backend's slots for the ``async with`` block."""
        if not self._sem.locked():
            await self._sem.acquire()  # a free slot: returns without suspending
        else:
            if self.waiting >= self.max_queue:
                raise self._busy("the wait queue is full")
            self.waiting += 1
            try:
                await asyncio.wait_for(self._sem.acquire(), self.timeout)
            except (TimeoutError, asyncio.TimeoutError):
                raise self._busy(f"no slot within {self.timeout:g} s") from None
            finally:
                self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._sem.release()
