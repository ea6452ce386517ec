"""``GET /v1/events``: every event of the run's bus as Server-Sent Events, filterable.

Each bus event (``description``, ``alert``, ``source``, ``describer``, ``processor``,
``run``...) becomes one SSE message::

    id: 17
    event: description
    data: {"id": 17, "type": "description", "time": ..., "source": "main", "frame_index": 42, "payload": {...}}

Besides the bus events, the hub adds ``description.partial`` while a describer's
streamed answer comes in (the text so far; the bus carries only finished answers).
These are transient: they have no ``id`` and are not kept for replay.

``?type=a,b`` keeps only those types, ``?stream=main,cam2`` only events whose
``source`` is one of those. The newest ``history`` events are kept: a client that
reconnects with ``Last-Event-ID`` (``EventSource`` does it by itself) or
``?last_event_id=N`` gets what it missed first. A client that falls more than
``client_queue`` events behind is disconnected rather than silently skipped, and
catches up from the history when it reconnects; if the events it missed are no
longer kept it first gets an ``event: gap`` message with ``{"missed": N}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

from framelens import Context, Event

__all__ = ["EventHub", "EventFilter"]

_KEEPALIVE_S = 15.0
_PARTIAL_POLL_S = 0.1
_END = object()


@dataclass(frozen=True)
class EventFilter:
    """Which events a client wants: ``types`` and ``streams`` (empty: all)."""

    types: frozenset[str] = frozenset()
    streams: frozenset[str] = frozenset()

    def wants(self, item: dict[str, Any]) -> bool:
        if self.types and item["type"] not in self.types:
            return False
        return not self.streams or item.get("source") in self.streams


@dataclass(eq=False)
class _Client:
    wanted: EventFilter
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    overflow: bool = False


def _message(item: dict[str, Any]) -> str:
    data = json.dumps(item, default=str, ensure_ascii=False, separators=(",", ":"))
    if "id" not in item:  # transient: the client's Last-Event-ID stays at the last kept event
        return f"event: {item['type']}\ndata: {data}\n\n"
    return f"id: {item['id']}\nevent: {item['type']}\ndata: {data}\n\n"


class EventHub:
    """Collects the bus's events on ``loop`` (default: the run's) with increasing ids and fans them out to SSE clients.

    ``attach()`` subscribes to the bus; bus subscribers run in the publisher's
    thread, so each event is handed to the loop (in publication order) and never
    waits for a client. ``close()`` unsubscribes and ends every client's stream.
    """

    def __init__(self, context: Context, loop: asyncio.AbstractEventLoop | None = None, *, history: int,
                 client_queue: int) -> None:
        self.context = context
        self._loop = loop  # None: the run's I/O loop, started only once an event comes
        self.client_queue = client_queue
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._next_id = 1
        self._clients: set[_Client] = set()
        self._unsubscribe: Any = None
        self._partials: dict[str, str] = {}
        self._describer_source: dict[str, str | None] = {}
        self._poller: asyncio.Task[None] | None = None
        self.snapshot_paths: collections.OrderedDict[str, str] = collections.OrderedDict()  # name -> path
        self.published = 0

    # -- input (any thread) ------------------------------------------------------------------

    def attach(self) -> None:
        self._unsubscribe = self.context.events.subscribe(self._from_bus)

    def _from_bus(self, event: Event) -> None:
        loop = self._loop or self.context.runner.loop
        with contextlib.suppress(RuntimeError):  # the loop is closed at shutdown
            loop.call_soon_threadsafe(self._add, event.to_dict())

    # -- on the loop -----------------------------------------------------------------------

    def _add(self, item: dict[str, Any], *, transient: bool = False) -> None:
        if not transient:
            item = {"id": self._next_id, **item}
            self._next_id += 1
        self.published += 1
        payload = item.get("payload") or {}
        if item["type"] == "description":
            describer = str(payload.get("describer", ""))
            self._describer_source[describer] = item.get("source")
            self._partials.pop(describer, None)
        path = payload.get("snapshot_path") if item["type"] == "alert" else None
        if isinstance(path, str) and path:
            name = path.replace("\\", "/").rsplit("/", 1)[-1]
            self.snapshot_paths[name] = path
            while len(self.snapshot_paths) > 2000:
                self.snapshot_paths.popitem(last=False)
        if not transient:
            self._history.append(item)
        for client in list(self._clients):
            if client.overflow or not client.wanted.wants(item):
                continue
            if client.queue.qsize() >= self.client_queue:
                client.overflow = True
                client.queue.put_nowait(_END)
            else:
                client.queue.put_nowait(item)

    async def _poll_partials(self) -> None:
        # Streamed answers arrive as sticky results only; their growth is reported here.
        while self._clients:
            await asyncio.sleep(_PARTIAL_POLL_S)
            for key, value in self.context.sticky_results().items():
                if getattr(value, "partial", False) is not True or not hasattr(value, "payload"):
                    continue
                text = str(getattr(value, "text", ""))
                if self._partials.get(key) == text:
                    continue
                self._partials[key] = text
                payload = dict(value.payload())
                payload["partial"] = True
                self._add({"type": "description.partial", "time": time.time(),
                           "source": self._describer_source.get(key), "frame_index": payload.get("frame_index"),
                           "payload": payload}, transient=True)

    def recent(self, types: Collection[str] = ()) -> list[dict[str, Any]]:
        """Kept events, oldest first (of ``types`` only, if given)."""
        return [i for i in self._history if not types or i["type"] in types]

    async def stream(self, wanted: EventFilter, last_event_id: int | None) -> AsyncIterator[str]:
        client = _Client(wanted)
        self._clients.add(client)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_partials())
        try:
            yield "retry: 2000\n\n"
            if last_event_id is not None:
                kept = list(self._history)
                oldest = kept[0]["id"] if kept else self._next_id
                if last_event_id + 1 < oldest:
                    missed = oldest - last_event_id - 1
                    yield f"event: gap\ndata: {json.dumps({'missed': missed})}\n\n"
                for item in kept:
                    if item["id"] > last_event_id and wanted.wants(item):
                        yield _message(item)
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), _KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if item is _END:
                    return
                yield _message(item)
        finally:
            self._clients.discard(client)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def detach(self) -> None:
        """Stop listening to the bus (from any thread)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def close(self) -> None:
        """Stop listening and end every client's stream (call on the loop)."""
        self.detach()
        if self._poller is not None:
            self._poller.cancel()
        for client in list(self._clients):
            client.queue.put_nowait(_END)
