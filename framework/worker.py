"""The core's mechanism for slow work: a background worker fed with the newest frame.

Every slow processor (VLM describers, alert evaluation, heavy models) uses
:class:`BackgroundWorker` so the video never waits for it::

    worker = BackgroundWorker("ollama", describe, interval=0, timeout=30,
                              on_result=publish, on_error=report, runner=context.runner)
    ...
    def process(self, frame):
        worker.submit(frame)     # never blocks; replaces a frame still waiting
        return frame

At most one frame waits while a call is in flight; a newer frame replaces it,
so when the worker frees up it always starts on the newest frame there is.

Workers of many cameras that ask one backend can share a :class:`FairShare`: a
limit on their calls in flight whose freed slots go to the longest waiter, so a
slow backend slows every camera evenly instead of starving some.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .aio import AsyncRunner
from .frame import Frame
from .stats import Timings

__all__ = ["BackgroundWorker", "FairShare"]

log = logging.getLogger("framelens.worker")

R = TypeVar("R")


class FairShare:
    """At most ``limit`` calls in flight among the workers that share it, served first come,
    first served.

    A freed slot is handed straight to the longest-waiting call, so a worker that asks
    again the moment its answer came back cannot overtake workers that were already
    waiting (a plain semaphore lets it, and under load some cameras then starve). Used
    on one event loop (the run's runner); give it a limit no larger than what the
    backend serves at once, so the backend's own queue never has to pick.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("FairShare needs a limit of at least 1")
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self.waiting:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # on success the slot was handed over: in_flight already counts it
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass the slot on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    async def run(self, call: Awaitable[R]) -> R:
        """Await ``call`` in a slot."""
        try:
            await self.acquire()
        except BaseException:
            if inspect.iscoroutine(call):
                call.close()  # cancelled (a timeout, shutdown) while waiting: it never ran
            raise
        try:
            return await call
        finally:
            self.release()


class BackgroundWorker(Generic[R]):
    """Calls ``fn(frame)`` on its own thread, always on the newest submitted frame.

    Args:
        name: used in thread names and log lines.
        fn: the slow work. A coroutine function runs on ``runner``'s event loop
            and is cancelled when it exceeds ``timeout``; a plain function runs
            on the worker thread and must bound its own time (pass ``timeout``
            to the clients it uses), and a late result is discarded.
        interval: seconds between the starts of two calls; 0 starts the next
            call as soon as the previous one finished.
        timeout: seconds a call may take before ``on_error`` gets a
            :class:`TimeoutError`; ``None`` waits for ever.
        on_result: ``on_result(frame, result, seconds)`` after each successful call.
        on_error: ``on_error(frame, exception, seconds)`` after each failed call.
        share: a :class:`FairShare` that async calls wait in (the time waited counts
            towards ``timeout``), for workers of many cameras sharing one backend.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[Frame], R] | Callable[[Frame], Awaitable[R]],
        *,
        interval: float = 0.0,
        timeout: float | None = None,
        on_result: Callable[[Frame, R, float], None] | None = None,
        on_error: Callable[[Frame, BaseException, float], None] | None = None,
        runner: AsyncRunner | None = None,
        share: FairShare | None = None,
    ) -> None:
        self.name = name
        self.share = share
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn)
        if self._is_async and runner is None:
            raise ValueError("an async worker function needs an AsyncRunner")
        self.interval = interval
        self.timeout = timeout
        self._on_result = on_result
        self._on_error = on_error
        self._runner = runner
        self._cond = threading.Condition()
        self._pending: Frame | None = None
        self._newest_index = -1
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self.timings = Timings()
        self.submitted = 0
        self.replaced = 0
        self.errors = 0
        self.timeouts = 0
        self.last_staleness: int | None = None

    @property
    def busy(self) -> bool:
        """True while a call is in flight."""
        return self._busy

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"worker-{self.name}", daemon=True)
            self._thread.start()

    def submit(self, frame: Frame) -> None:
        """Offer a frame. Never blocks; a frame still waiting is replaced and counted."""
        with self._cond:
            self.submitted += 1
            self._newest_index = frame.index
            if self._pending is not None:
                self.replaced += 1
            self._pending = frame
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking frames, let a call in flight finish (up to ``timeout``) and join."""
        with self._cond:
            self._stopping = True
            self._pending = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("worker %s still busy after %.1f s at shutdown; abandoning it", self.name, timeout)
            self._thread = None

    def _next_frame(self, not_before: float) -> Frame | None:
        with self._cond:
            while not self._stopping:
                wait = not_before - time.monotonic()
                if self._pending is not None and wait <= 0:
                    frame = self._pending
                    self._pending = None
                    self.last_staleness = self._newest_index - frame.index
                    self._busy = True
                    return frame
                self._cond.wait(timeout=wait if wait > 0 else None)
            return None

    def _loop(self) -> None:
        not_before = 0.0
        while True:
            frame = self._next_frame(not_before)
            if frame is None:
                return
            started = time.monotonic()
            not_before = started + self.interval
            try:
                result = self._call(frame)
            except BaseException as exc:  # reported, never fatal: the video must go on
                elapsed = time.monotonic() - started
                self.errors += 1
                if isinstance(exc, TimeoutError):
                    self.timeouts += 1
                self._report_error(frame, exc, elapsed)
            else:
                elapsed = time.monotonic() - started
                self.timings.add(elapsed)
                if self._on_result is not None:
                    try:
                        self._on_result(frame, result, elapsed)
                    except Exception:
                        log.exception("worker %s: result handler failed", self.name)
            finally:
                self._busy = False

    def _call(self, frame: Frame) -> R:
        if self._is_async:
            assert self._runner is not None
            coro = self._fn(frame)
            assert inspect.iscoroutine(coro)
            if self.share is not None:
                coro = self.share.run(coro)
            result: R = self._runner.run(coro, self.timeout)
            return result
        started = time.monotonic()
        value = self._fn(frame)
        if self.timeout is not None and time.monotonic() - started > self.timeout:
            raise TimeoutError(f"took longer than {self.timeout:g} s; result discarded")
        return value  # type: ignore[return-value]

    def _report_error(self, frame: Frame, exc: BaseException, elapsed: float) -> None:
        if self._on_error is None:
            log.error("worker %s failed on frame %d: %s", self.name, frame.index, exc)
            return
        try:
            self._on_error(frame, exc, elapsed)
        except Exception:
            log.exception("worker %s: error handler failed", self.name)

    def stats(self) -> dict[str, Any]:
        return {
            **self.timings.summary(),
            "submitted": self.submitted,
            "replaced": self.replaced,
            "errors": self.errors,
            "timeouts": self.timeouts,
        }
