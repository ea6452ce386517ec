"""Live sources that stay open for HTTP requests and outputs: ``stream://ID``."""

from __future__ import annotations

import concurrent.futures
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .capture import LiveCapture
from .events import EventBus
from .source import Source, redact

__all__ = ["Stream", "StreamRegistry"]


@dataclass
class Stream:
    """A live source kept open, with its newest frame always at hand."""

    id: str
    url: str
    capture: LiveCapture
    description: str = ""
    origin: str = "api"
    opened_at: float = field(default=0.0)

    def to_dict(self) -> dict[str, Any]:
        cap = self.capture
        return {
            "id": self.id,
            "url": redact(self.url),
            "description": self.description,
            "origin": self.origin,
            "state": cap.state,
            "error": cap.error,
            "width": cap.info.width,
            "height": cap.info.height,
            "fps": cap.info.fps,
            "frames": cap.captured,
            "dropped": cap.dropped,
        }


def _slug(url: str) -> str:
    tail = re.split(r"[/:@?#]+", url.rstrip("/"))[-1] or "stream"
    return re.sub(r"[^A-Za-z0-9_-]", "-", tail)[:32] or "stream"


class StreamRegistry:
    """Every live source of a run, by id.

    ``open(url)`` opens a source once and keeps it (asking again for the same
    URL returns the same stream); ``remove(id)`` closes it. Listeners added with
    ``on_change`` hear about every addition and removal.

    Opens of different URLs run in parallel: the registry's lock is held only to
    look up and record streams, never while a camera is being dialled. Callers
    that ask for a URL whose open is under way wait for that one open and share
    its stream (or its error).
    """

    def __init__(self, make_source: Callable[[str], Source], events: EventBus) -> None:
        self._make_source = make_source
        self._events = events
        self._streams: dict[str, Stream] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count(1)
        self._listeners: list[Callable[[str, Stream], None]] = []
        # url -> (id, the open under way) for opens that have not finished yet
        self._opening: dict[str, tuple[str, concurrent.futures.Future[Stream]]] = {}

    def on_change(self, fn: Callable[[str, Stream], None]) -> None:
        """``fn("added"|"removed", stream)`` after every change."""
        self._listeners.append(fn)

    def _notify(self, what: str, stream: Stream) -> None:
        for fn in list(self._listeners):
            fn(what, stream)

    def add(self, stream: Stream) -> Stream:
        with self._lock:
            if stream.id in self._streams:
                raise ValueError(f"a stream with id {stream.id!r} already exists")
            self._streams[stream.id] = stream
        self._notify("added", stream)
        return stream

    def find_url(self, url: str) -> Stream | None:
        with self._lock:
            return next((s for s in self._streams.values() if s.url == url), None)

    def open(self, url: str, *, id: str | None = None, description: str = "", origin: str = "api",
             connect_url: str | None = None) -> Stream:
        """The stream for ``url``, opening it if needed. Raises :class:`SourceError`
        or :class:`ConfigError` if it cannot be opened.

        ``connect_url`` is what the source is made from when it differs from the
        key ``url`` (a request's URL with its host pinned to the checked address).
        """
        with self._lock:
            existing = self.find_url(url)
            if existing is not None:
                return existing
            pending = self._opening.get(url)
            if pending is None:
                taken = set(self._streams) | {i for i, _ in self._opening.values()}
                if id is None:
                    base = _slug(url)
                    id = base if base not in taken else f"{base}-{next(self._counter)}"
                elif id in taken:
                    raise ValueError(f"a stream with id {id!r} already exists")
                mine: concurrent.futures.Future[Stream] = concurrent.futures.Future()
                self._opening[url] = (id, mine)
        if pending is not None:
            return pending[1].result()
        assert id is not None
        try:
            source = self._make_source(connect_url or url)
            capture = LiveCapture(source, id, self._events)
            capture.start(wait_open=True)
            stream = Stream(id, url, capture, description, origin, time.time())
        except BaseException as exc:
            with self._lock:
                self._opening.pop(url, None)
            mine.set_exception(exc)
            raise
        with self._lock:
            self._opening.pop(url, None)
            duplicate = id in self._streams
            if not duplicate:
                self._streams[id] = stream
        if duplicate:
            capture.stop()
            error = ValueError(f"a stream with id {id!r} already exists")
            mine.set_exception(error)
            raise error
        mine.set_result(stream)
        self._notify("added", stream)
        return stream

    def get(self, id: str) -> Stream:
        """The stream ``id``; :class:`KeyError` if there is none."""
        with self._lock:
            return self._streams[id]

    def list(self) -> list[Stream]:
        with self._lock:
            return list(self._streams.values())

    def remove(self, id: str) -> Stream:
        with self._lock:
            stream = self._streams.pop(id)
        stream.capture.stop()
        self._notify("removed", stream)
        return stream

    def close_all(self) -> None:
        for stream in self.list():
            self.remove(stream.id)
