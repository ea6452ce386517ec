"""Server-Sent Events for ``GET /v1/alerts/events``: alert transitions for browsers and scripts.

Each transition is sent as::

    id: 17
    event: alert
    data: {"type": "alert", "time": ..., "source": "main", "frame_index": 42, "payload": {...}}

The last ``history`` events are kept, so a client that reconnects with
``Last-Event-ID`` (browsers' ``EventSource`` do this by themselves) gets what
it missed. A comment line every ``keepalive`` seconds keeps proxies from
closing an idle stream. A client that falls ``client_queue`` events behind is
disconnected, and catches up from the history when it reconnects.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator

from framelens import Event

__all__ = ["SseBroadcaster"]

_CLOSE = "close"
_OVERFLOW = "overflow"

_Item = tuple[int, str]


def _format(item: _Item) -> str:
    seq, data = item
    return f"id: {seq}\nevent: alert\ndata: {data}\n\n"


class _Client:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[_Item | str] = asyncio.Queue()
        self.limit = limit
        self.overflowed = False

    def offer(self, item: _Item | str) -> None:
        # Runs on the client's loop; the bound keeps one stalled reader from growing without end.
        if self.overflowed:
            return
        if isinstance(item, tuple) and self.queue.qsize() >= self.limit:
            self.overflowed = True
            self.queue.put_nowait(_OVERFLOW)
            return
        self.queue.put_nowait(item)


class SseBroadcaster:
    """Event-bus subscriber that fans one processor's ``alert`` events out to SSE clients."""

    def __init__(self, processor_id: str, *, history: int = 256, client_queue: int = 1000,
                 keepalive: float = 15.0) -> None:
        self.processor_id = processor_id
        self.keepalive = keepalive
        self._history: deque[_Item] = deque(maxlen=history)
        self._clients: set[_Client] = set()
        self._client_queue = client_queue
        self._seq = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def __call__(self, event: Event) -> None:
        if event.type != "alert" or event.payload.get("processor") != self.processor_id:
            return
        data = json.dumps(event.to_dict(), default=str, ensure_ascii=False)
        with self._lock:
            self._seq += 1
            item = (self._seq, data)
            self._history.append(item)
            clients = list(self._clients)
        for client in clients:
            self._post(client, item)

    @staticmethod
    def _post(client: _Client, item: _Item | str) -> None:
        try:
            client.loop.call_soon_threadsafe(client.offer, item)
        except RuntimeError:
            pass  # that client's loop is gone, and the client with it

    async def stream(self, last_event_id: str | None = None) -> AsyncIterator[str]:
        """The SSE text for one client: missed events after ``last_event_id``, then live ones."""
        client = _Client(asyncio.get_running_loop(), self._client_queue)
        with self._lock:
            # Registering and reading the history under one lock: no event is missed or sent twice.
            replay = self._replay(last_event_id)
            closed = self._closed
            if not closed:
                self._clients.add(client)
        try:
            yield "retry: 2000\n\n"
            for item in replay:
                yield _format(item)
            if closed:
                return
            while True:
                try:
                    got = await asyncio.wait_for(client.queue.get(), self.keepalive)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if isinstance(got, str):
                    return  # closing, or too far behind: the client reconnects with Last-Event-ID
                yield _format(got)
        finally:
            with self._lock:
                self._clients.discard(client)

    def _replay(self, last_event_id: str | None) -> list[_Item]:
        if last_event_id is None:
            return []
        try:
            last = int(last_event_id)
        except ValueError:
            return []
        if last > self._seq:
            return list(self._history)  # an id from before a restart: send what we have
        return [item for item in self._history if item[0] > last]

    def close(self) -> None:
        """End every open stream (at shutdown)."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
        for client in clients:
            self._post(client, _CLOSE)
