"""The event bus: descriptions, alerts and source state, for scripts and services.

Each event becomes one JSON object on ``--events``::

    {"type": "description", "time": 1732270000.123, "source": "main",
     "frame_index": 42, "payload": {...}}

The keys are stable; payloads are documented by the plugin that publishes them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["Event", "EventBus", "JsonLinesWriter"]

log = logging.getLogger("framelens.events")


@dataclass(frozen=True)
class Event:
    """Something that happened: ``type`` (``description``, ``alert``, ``source``...) and its payload."""

    type: str
    payload: Mapping[str, Any]
    source: str | None = None
    frame_index: int | None = None
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "time": self.time,
            "source": self.source,
            "frame_index": self.frame_index,
            "payload": dict(self.payload),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, ensure_ascii=False)


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers every published event to every subscriber, in publication order.

    Subscribers run in the publisher's thread and must be quick: anything slow
    (webhooks, network brokers) queues the event and does the work elsewhere.
    A subscriber that raises is logged and keeps its subscription.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it again."""
        with self._lock:
            self._subscribers = [*self._subscribers, fn]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not fn]

        return unsubscribe

    def publish(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        source: str | None = None,
        frame_index: int | None = None,
    ) -> Event:
        event = Event(type, payload, source, frame_index)
        self.emit(event)
        return event

    def emit(self, event: Event) -> None:
        # The lock serialises delivery so every subscriber sees one global order.
        with self._lock:
            subscribers = self._subscribers
            for fn in subscribers:
                try:
                    fn(event)
                except Exception:
                    log.exception("event subscriber %r failed on a %s event", fn, event.type)


class JsonLinesWriter:
    """Writes each event as one JSON line and flushes it, so readers never see half a line."""

    def __init__(self, stream: IO[str], *, close: bool) -> None:
        self._stream = stream
        self._close = close
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._close:
                self._stream.close()
            else:
                self._stream.flush()
