"""Fan one video out to many viewers as JPEG: encoded once per frame, only while watched.

:class:`JpegBroadcaster` sits between a frame loop (any thread, never blocked)
and asyncio viewers (an HTTP server's connections). The ``mjpeg`` output uses it;
other plugins serving JPEG frames (snapshots, WebSocket viewers) can too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framelens import Frame, encode_jpeg, fit_max_side

__all__ = ["EncodedFrame", "JpegBroadcaster"]

log = logging.getLogger("framelens.mjpeg")


@dataclass(frozen=True)
class EncodedFrame:
    """One JPEG as sent to viewers. ``seq`` grows by one per encoded frame; ``index`` and
    ``timestamp`` are the frame's; ``put_seq`` says which ``put()`` it came from."""

    seq: int
    index: int
    timestamp: float
    jpeg: bytes
    put_seq: int


class JpegBroadcaster:
    """The newest frame, encoded on demand on its own thread, for any number of asyncio viewers.

    ``put(frame)`` may be called from any thread and never waits for encoding.
    Viewers run on ``loop``: they register with ``want()``/``unwant()`` and await
    ``next_after(seq)``. Each frame is encoded at most once, and only while at
    least one viewer wants frames.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        quality: int,
        max_fps: float,
        max_side: int,
        on_encoded: Callable[[EncodedFrame], None] | None = None,
    ) -> None:
        self._loop = loop
        self._on_encoded = on_encoded
        self._quality = quality
        self._min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._max_side = max_side
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._frame_seq = 0  # bumped by every put()
        self._encoded_frame_seq = 0  # the frame_seq of the last encoded frame
        self._demand = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.frames_in = 0
        self.encoded = 0
        # Touched only on the event loop thread:
        self._latest: EncodedFrame | None = None
        self._changed: asyncio.Future[None] = loop.create_future()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._encode_loop, name="mjpeg-encoder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop encoding and release every waiting viewer (``next_after`` returns ``None``)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._call_in_loop(self._wake)
        if self._thread is not None:
            self._thread.join(5)

    def put(self, frame: Frame) -> None:
        with self._cond:
            self._frame = frame
            self._frame_seq += 1
            self.frames_in += 1
            if self._demand:
                self._cond.notify()

    def want(self) -> None:
        with self._cond:
            self._demand += 1
            self._cond.notify()

    def unwant(self) -> None:
        with self._cond:
            self._demand -= 1

    async def next_after(self, seq: int) -> EncodedFrame | None:
        """The newest encoded frame with a ``seq`` above ``seq``; waits for one.
        ``None`` once the broadcaster stopped."""
        while not self._stopped:
            latest = self._latest
            if latest is not None and latest.seq > seq:
                return latest
            await asyncio.shield(self._changed)
        return None

    async def snapshot(self, timeout: float) -> EncodedFrame | None:
        """The newest frame put, encoded (reusing the stream's JPEG when it is current).
        ``None`` if no frame was ever put or encoding took longer than ``timeout``."""
        latest = self._latest
        with self._cond:
            if self._frame is None:
                return None
            if latest is not None and latest.put_seq == self._frame_seq:
                return latest
            self._demand += 1
            self._cond.notify()
        try:
            return await asyncio.wait_for(self.next_after(latest.seq if latest else 0), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self.unwant()

    def _encode_loop(self) -> None:
        seq = 0
        next_at = 0.0
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    wait = next_at - time.monotonic()
                    if self._demand and self._frame_seq != self._encoded_frame_seq and wait <= 0:
                        break
                    self._cond.wait(wait if wait > 0 else None)
                frame, put_seq = self._frame, self._frame_seq
                self._encoded_frame_seq = put_seq
            assert frame is not None
            next_at = time.monotonic() + self._min_interval
            try:
                jpeg = encode_jpeg(fit_max_side(frame.image, self._max_side), self._quality)
            except Exception:  # one bad frame must not end the stream for everybody
                log.exception("mjpeg: cannot encode frame %d", frame.index)
                continue
            seq += 1
            self.encoded += 1
            encoded = EncodedFrame(seq, frame.index, frame.timestamp, jpeg, put_seq)
            if self._on_encoded is not None:
                self._on_encoded(encoded)
            self._call_in_loop(self._publish, encoded)

    def _call_in_loop(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed at shutdown
            self._loop.call_soon_threadsafe(fn, *args)

    def _publish(self, encoded: EncodedFrame) -> None:
        self._latest = encoded
        self._wake()

    def _wake(self) -> None:
        done, self._changed = self._changed, self._loop.create_future()
        if not done.done():
            done.set_result(None)
