"""Reading live sources on their own thread so the loop never works on old frames."""

from __future__ import annotations

import logging
import threading
import time

from .errors import SourceError
from .events import EventBus
from .frame import Frame
from .source import Source, SourceInfo

__all__ = ["LiveCapture"]

log = logging.getLogger("framelens.capture")


class LiveCapture:
    """Reads a live :class:`Source` continuously and keeps only its newest frame.

    Frames the consumer never took are counted in ``dropped``. When the source
    fails (``SourceError`` or ``None`` from ``read``) a ``source`` event with
    ``state: "lost"`` is published and the source is reopened with exponential
    backoff (``backoff`` doubling up to ``max_backoff`` seconds); a successful
    reopen publishes ``state: "connected"``.
    """

    def __init__(
        self,
        source: Source,
        source_id: str,
        events: EventBus,
        *,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.source = source
        self.source_id = source_id
        self.events = events
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.info = SourceInfo()
        self.state = "connecting"
        self.error: str | None = None
        self.captured = 0
        self.dropped = 0
        self._latest: Frame | None = None
        self._consumed_index = -1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, wait_open: bool = True) -> SourceInfo:
        """Open the source and start capturing. With ``wait_open`` an unopenable source
        raises :class:`SourceError` here instead of retrying in the background."""
        if wait_open:
            self.info = self.source.open()
            self._set_state("connected")
        self._thread = threading.Thread(
            target=self._run, args=(not wait_open,), name=f"capture-{self.source_id}", daemon=True
        )
        self._thread.start()
        return self.info

    def _set_state(self, state: str, reason: str | None = None) -> None:
        self.state = "live" if state == "connected" else state
        self.error = reason
        payload: dict[str, object] = {"state": state, "url": self.source.describe()}
        if reason:
            payload["reason"] = reason
        if state == "connected":
            payload.update(width=self.info.width, height=self.info.height, fps=self.info.fps)
        self.events.publish("source", payload, source=self.source_id)
        with self._cond:
            self._cond.notify_all()

    def _run(self, needs_open: bool) -> None:
        delay = self.backoff
        index = 0
        while not self._stop.is_set():
            if needs_open:
                try:
                    self.info = self.source.open()
                except SourceError as exc:
                    if self.state != "lost" or self.error != str(exc):
                        log.warning("%s: %s; retrying in %.1f s", self.source.describe(), exc, delay)
                        self._set_state("lost", str(exc))
                    if not self.source.reconnect or self._stop.wait(delay):
                        self._finish("lost")
                        return
                    delay = min(delay * 2, self.max_backoff)
                    continue
                needs_open = False
                delay = self.backoff
                self._set_state("connected")
            try:
                image = self.source.read()
                failure = None if image is not None else "end of stream"
            except SourceError as exc:
                image, failure = None, str(exc)
            if image is None:
                self.source.close()
                if not self.source.reconnect:
                    self._finish("ended", failure)
                    return
                log.warning("%s lost (%s); reconnecting", self.source.describe(), failure)
                self._set_state("lost", failure)
                needs_open = True
                if self._stop.wait(delay):
                    break
                continue
            frame = Frame(image, index, time.time(), self.source_id)
            index += 1
            with self._cond:
                if self._latest is not None and self._latest.index > self._consumed_index:
                    self.dropped += 1
                self._latest = frame
                self.captured += 1
                self._cond.notify_all()
        self.source.close()

    def _finish(self, state: str, reason: str | None = None) -> None:
        self.source.close()
        self._set_state(state, reason)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def latest(self) -> Frame | None:
        """The newest frame, whether or not it was taken before (for HTTP requests)."""
        with self._cond:
            return self._latest

    def next(self, timeout: float | None = None) -> Frame | None:
        """Wait for a frame newer than the last one taken; ``None`` on timeout or when
        the capture has ended for good."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                latest = self._latest
                if latest is not None and latest.index > self._consumed_index:
                    self._consumed_index = latest.index
                    return latest
                if not self.running or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.source.close()
