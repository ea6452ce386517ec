"""The webhook notifier: POSTs alert events to a URL, with retries, never blocking evaluation.

The event bus calls the notifier in the evaluating thread; the notifier only
hands the event to a queue on the run's I/O loop, where one task delivers
events in order. A delivery is retried on connection errors, timeouts, 408,
425, 429 (honouring ``Retry-After``) and 5xx, with exponential backoff, up
to ``attempts`` tries; then it is given up and logged. Other 4xx answers
mean the receiver refuses the request, so they are logged and not retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from framelens import AsyncRunner, Event
from framelens.web import parse_retry_after

__all__ = ["WebhookNotifier", "parse_header"]

log = logging.getLogger("framelens.alerts")

_RETRY_STATUS = frozenset({408, 425, 429})


def parse_header(text: str) -> tuple[str, str]:
    """``"Authorization: Bearer x"`` -> ``("Authorization", "Bearer x")``; :class:`ValueError` if malformed."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise ValueError(f"expected 'Name: value', got {text!r}")
    return name, value.strip()


class WebhookNotifier:
    """Delivers ``alert`` events of one processor to ``url`` as JSON (the ``--events`` line's object).

    ``select="notify"`` sends only events whose ``notify`` flag is set (a rule
    turning on outside its cooldown and how that episode ends); ``"all"``
    sends every transition.
    """

    def __init__(
        self,
        url: str,
        *,
        runner: AsyncRunner,
        processor_id: str,
        timeout: float = 5.0,
        attempts: int = 5,
        headers: Mapping[str, str] | None = None,
        select: Literal["notify", "all"] = "notify",
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = url
        self.runner = runner
        self.processor_id = processor_id
        self.timeout = timeout
        self.attempts = attempts
        self.headers = dict(headers or {})
        self.select = select
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.delivered = 0
        self.given_up = 0
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self.runner.run(self._setup(), timeout=10)

    async def _setup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._client = httpx.AsyncClient(timeout=self.timeout, headers=self.headers, follow_redirects=True)
        self._task = asyncio.create_task(self._run(), name=f"alerts-webhook-{self.processor_id}")

    def __call__(self, event: Event) -> None:
        """Event-bus subscriber: queue the event and return at once."""
        if event.type != "alert" or event.payload.get("processor") != self.processor_id:
            return
        if self.select == "notify" and not event.payload.get("notify"):
            return
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, event.to_dict())
        except RuntimeError:
            log.error("alerts webhook %s: the I/O loop is closed; %s event of rule %s not sent",
                      self.url, event.payload.get("state"), event.payload.get("rule"))

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            body = await self._queue.get()
            try:
                await self._deliver(body)
            except Exception:
                log.exception("alerts webhook %s: delivery failed unexpectedly", self.url)
            finally:
                self._queue.task_done()

    async def _deliver(self, body: dict[str, Any]) -> None:
        assert self._client is not None
        delay = self.backoff
        problem = ""
        for attempt in range(1, self.attempts + 1):
            wait: float | None = None
            try:
                response = await self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in _RETRY_STATUS:
                    self.given_up += 1
                    log.error("alerts webhook %s refused the %s event of rule %s with %s; not retrying",
                              self.url, body["payload"].get("state"), body["payload"].get("rule"), problem)
                    return
                wait = parse_retry_after(response.headers.get("retry-after"))
            if attempt < self.attempts:
                log.debug("alerts webhook %s: attempt %d failed (%s)", self.url, attempt, problem)
                await asyncio.sleep(min(self.max_backoff, wait if wait is not None else delay))
                delay *= 2
        self.given_up += 1
        log.error("alerts webhook %s: gave up on the %s event of rule %s after %d attempts: %s",
                  self.url, body["payload"].get("state"), body["payload"].get("rule"), self.attempts, problem)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then stop."""
        if self._loop is None:
            return
        try:
            self.runner.run(self._close(timeout), timeout=timeout + 5)
        except (TimeoutError, RuntimeError) as exc:
            log.error("alerts webhook %s: shutdown did not finish: %s", self.url, exc)

    async def _close(self, timeout: float) -> None:
        assert self._queue is not None and self._client is not None and self._task is not None
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            log.error("alerts webhook %s: %d events not delivered at shutdown (receiver too slow or down)",
                      self.url, self._queue.qsize() + 1)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._client.aclose()
