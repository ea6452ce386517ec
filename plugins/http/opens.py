"""A bound on the live-source opens that requests start, per client and in total.

Dialling a camera can take the whole open timeout (a host that accepts the TCP
connection and never answers). Such opens run on their own small thread pool,
never on the event loop's default executor, so image decoding, health probes
and model listings never queue behind them; and a client that starts more than
``per_client`` opens at once (or all clients more than ``total``) gets a 429
with ``Retry-After`` instead of a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from .errors import ApiError

__all__ = ["CLIENT", "OpenGate"]

T = TypeVar("T")

CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("framelens_http_client", default="-")
"""The address of the client whose request is being served (set by the gateway)."""


class OpenGate:
    """Runs blocking opens on a dedicated pool with per-client and total limits, each with a timeout."""

    def __init__(self, *, total: int, per_client: int, timeout: float) -> None:
        self.total = total
        self.per_client = per_client
        self.timeout = timeout
        self.running: Counter[str] = Counter()
        # One thread per allowed open, plus room for opens that outlive their timeout
        # (a blocked FFmpeg call cannot be interrupted; its thread is freed when it returns).
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=total * 2, thread_name_prefix="open")

    def _busy(self, why: str) -> ApiError:
        retry = max(1, round(self.timeout / 2))
        return ApiError(429, f"too many live sources being opened at once ({why}); retry in {retry} s",
                        code="rate_limit_exceeded", headers={"Retry-After": str(retry)})

    async def run(self, fn: Callable[[], T], *, on_late: Callable[[T], None] | None = None,
                  timed_out: Callable[[], ApiError]) -> T:
        """``fn()`` on the open pool within ``timeout`` s; ``timed_out()`` is raised after that.

        A result that arrives after the timeout is handed to ``on_late`` (to close it).
        """
        client = CLIENT.get()
        if sum(self.running.values()) >= self.total:
            raise self._busy(f"{self.total} in total, -c http-max-opens")
        if self.running[client] >= self.per_client:
            raise self._busy(f"{self.per_client} per client, -c http-max-opens-per-client")
        self.running[client] += 1
        try:
            future = self._pool.submit(contextvars.copy_context().run, fn)
            try:
                return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout)
            except BaseException as exc:
                if not future.done() and on_late is not None:
                    late = on_late
                    future.add_done_callback(lambda f: late(f.result()) if f.exception() is None else None)
                if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
                    raise timed_out() from None
                raise
        finally:
            self.running[client] -= 1
            if self.running[client] <= 0:
                del self.running[client]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
