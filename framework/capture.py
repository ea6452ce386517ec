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

    A source that stops delivering while its connection stays open (a frozen
    encoder, a stopped process, a cable pulled behind a switch) is watched from
    a second thread: ``state`` reads ``"stale"`` as soon as no frame came for
    ``stale_after`` seconds, and after ``read_timeout`` seconds the capture is
    declared ``lost`` (and reconnected once the blocked read returns), whatever
    the source's own timeouts do. One outage publishes exactly one ``lost``
    event, however many reopen attempts fail and for whatever reasons.

    With ``max_reconnects`` the capture gives up after that many failed reopen
    attempts in a row (a camera that is gone for good); a source that cannot be
    reopened at all (``reconnect = False``) gives up at its first failed open. Then one
    ``source`` event with ``state: "ended"`` and the reason is published, ``failure``
    says why, and :meth:`next` returns ``None``.
    A source that simply ends (``None`` from a non-reconnecting source) leaves
    ``failure`` at ``None``.
    """

    def __init__(
        self,
        source: Source,
        source_id: str,
        events: EventBus,
        *,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        read_timeout: float | None = None,
        stale_after: float | None = None,
        max_reconnects: int | None = None,
    ) -> None:
        self.source = source
        self.source_id = source_id
        self.events = events
        self.backoff = backoff
        self.max_backoff = max_backoff
        configured = getattr(getattr(source, "options", None), "read_timeout", None)
        self.read_timeout = float(read_timeout or configured or 10.0)
        self.stale_after = stale_after
        self.max_reconnects = max_reconnects
        self.failure: str | None = None  # why the capture gave up for good
        self.info = SourceInfo()
        self._state = "connecting"
        self.last_frame_at: float | None = None  # time.monotonic() of the newest frame
        self._opened_at = time.monotonic()
        self.error: str | None = None
        self.captured = 0
        self.dropped = 0
        self._latest: Frame | None = None
        self._consumed_index = -1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None

    @property
    def state(self) -> str:
        """``connecting``, ``live``, ``stale`` (live, but no frame for ``stale_after`` s), ``lost`` or ``ended``."""
        state = self._state
        if state == "live" and self.source.live and self.frame_age() > self._stale_limit():
            return "stale"
        return state

    def _stale_limit(self) -> float:
        if self.stale_after is not None:
            return self.stale_after
        # A few frame intervals, never more than the read timeout.
        interval = 1.0 / self.info.fps if self.info.fps else 0.2
        return min(self.read_timeout, max(1.0, 3 * interval))

    def frame_age(self) -> float:
        """Seconds since the newest frame arrived (since the open while none has)."""
        since = self.last_frame_at if self.last_frame_at is not None else self._opened_at
        return time.monotonic() - since

    def start(self, *, wait_open: bool = True) -> SourceInfo:
        """Open the source and start capturing. With ``wait_open`` an unopenable source
        raises :class:`SourceError` here instead of retrying in the background."""
        self._opened_at = time.monotonic()
        if wait_open:
            self.info = self.source.open()
            self._opened_at = time.monotonic()
            self._set_state("connected")
        self._thread = threading.Thread(
            target=self._run, args=(not wait_open,), name=f"capture-{self.source_id}", daemon=True
        )
        self._thread.start()
        if self.source.live:
            self._watchdog = threading.Thread(target=self._watch, name=f"watchdog-{self.source_id}", daemon=True)
            self._watchdog.start()
        return self.info

    def _watch(self) -> None:
        """Declare a stalled source lost after ``read_timeout`` while its read is still blocked."""
        while not self._stop.wait(min(0.1, self.read_timeout / 4)):
            if self._state == "live" and self.frame_age() > self.read_timeout:
                reason = f"no frame for {self.read_timeout:g} s (rtsp-read-timeout / stream-read-timeout)"
                log.warning("%s lost (%s); reconnecting", self.source.describe(), reason)
                self._set_state("lost", reason)

    def _set_state(self, state: str, reason: str | None = None) -> None:
        self._state = "live" if state == "connected" else state
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
        failed_opens = 0
        while not self._stop.is_set():
            if needs_open:
                try:
                    self.info = self.source.open()
                except SourceError as exc:
                    failed_opens += 1
                    if self._stop.is_set():
                        break
                    if not self.source.reconnect:
                        self._give_up(str(exc))
                        return
                    if self.max_reconnects is not None and failed_opens >= self.max_reconnects:
                        self._give_up(f"gave up after {failed_opens} failed reconnect attempt"
                                      f"{'s' if failed_opens > 1 else ''} (--max-reconnects): {exc}")
                        return
                    if self._state != "lost":
                        log.warning("%s: %s; retrying in %.1f s", self.source.describe(), exc, delay)
                        self._set_state("lost", str(exc))
                    elif self.error != str(exc):
                        # Same outage, a new reason: no second event.
                        log.warning("%s: %s; retrying in %.1f s", self.source.describe(), exc, delay)
                        self.error = str(exc)
                    if self._stop.wait(delay):
                        return
                    delay = min(delay * 2, self.max_backoff)
                    continue
                needs_open = False
                failed_opens = 0
                delay = self.backoff
                self.last_frame_at = None
                self._opened_at = time.monotonic()
                self._set_state("connected")
            began = time.monotonic()
            try:
                image = self.source.read()
                failure = None if image is not None else "end of stream"
            except SourceError as exc:
                image, failure = None, str(exc)
            if image is not None and self.source.live and time.monotonic() - began >= self.read_timeout:
                # FFmpeg hands out one buffered frame each time its read timeout fires, so a
                # stalled camera would otherwise look alive once per timeout: a read that
                # blocked for the whole timeout is a stall, whatever it returned.
                image, failure = None, f"no frame for {self.read_timeout:g} s (the source stopped sending)"
            if image is None:
                self.source.close()
                if not self.source.reconnect:
                    self._finish("ended", failure)
                    return
                if self._state != "lost":  # the watchdog may have declared it already
                    log.warning("%s lost (%s); reconnecting", self.source.describe(), failure)
                    self._set_state("lost", failure)
                needs_open = True
                if self._stop.wait(delay):
                    break
                continue
            if self._state == "lost":
                # The watchdog declared it lost while this read was blocked; a frame
                # arriving now would be from before the stall: reopen as promised.
                self.source.close()
                needs_open = True
                continue
            frame = Frame(image, index, time.time(), self.source_id)
            index += 1
            self.last_frame_at = time.monotonic()
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

    def _give_up(self, reason: str) -> None:
        """The source will not come back: one ``ended`` event with the reason, and ``failure`` set
        (the capture's user reports it; no log line here, so it is said once)."""
        self.failure = reason
        self._finish("ended", reason)

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
        if self._watchdog is not None:
            self._watchdog.join(timeout)
        self.source.close()
