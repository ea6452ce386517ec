"""Live views: each open stream as MJPEG, encoded once per frame for all of its viewers.

The same idea as the ``mjpeg`` output's broadcaster, for the streams of
``context.streams``: one feed per stream, which runs only while someone watches,
takes the capture's newest frame at most ``max_fps`` times a second, encodes it
off the event loop and hands the same JPEG to every viewer. The feed only reads
the capture's newest-frame slot, so neither the pipeline nor the capture thread
ever waits for it, and a viewer that reads slowly just gets fewer, newer frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from framelens import Stream, encode_jpeg, fit_max_side

__all__ = ["Jpeg", "StreamFeed", "VideoFeeds"]

log = logging.getLogger("framelens.dashboard")

BOUNDARY = "frame"


@dataclass(frozen=True)
class Jpeg:
    """One encoded frame: ``seq`` grows per encoded frame; ``index`` is the capture's."""

    seq: int
    index: int
    timestamp: float
    data: bytes


class StreamFeed:
    """The newest JPEG of one stream, for any number of viewers on one event loop."""

    def __init__(self, stream: Stream, *, max_fps: float, quality: int, max_side: int) -> None:
        self.stream = stream
        self.interval = 1.0 / max_fps
        self.quality = quality
        self.max_side = max_side
        self.viewers = 0
        self.encoded = 0
        self.latest: Jpeg | None = None
        self._changed: asyncio.Event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def _want(self) -> None:
        self.viewers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _unwant(self) -> None:
        self.viewers -= 1

    async def _run(self) -> None:
        last_index = -1
        loop = asyncio.get_running_loop()
        while self.viewers > 0 and not self._stopped:
            started = loop.time()
            frame = self.stream.capture.latest()
            if frame is not None and frame.index != last_index:
                last_index = frame.index
                try:
                    data = await asyncio.to_thread(self._encode, frame.image)
                except Exception:  # one bad frame must not end the view for everybody
                    log.exception("dashboard: cannot encode frame %d of stream %s", frame.index, self.stream.id)
                else:
                    self.encoded += 1
                    self.latest = Jpeg(self.encoded, frame.index, frame.timestamp, data)
                    self._changed.set()
                    self._changed = asyncio.Event()
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def _encode(self, image: np.ndarray) -> bytes:
        return encode_jpeg(fit_max_side(image, self.max_side), self.quality)

    async def next_after(self, seq: int) -> Jpeg | None:
        """The newest JPEG newer than ``seq``; waits for one. ``None`` once the feed stopped."""
        while not self._stopped:
            latest = self.latest
            if latest is not None and latest.seq > seq:
                return latest
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), 1.0)
            except asyncio.TimeoutError:
                if self.stream.capture.state in ("ended", "closed"):
                    return None
        return None

    async def parts(self) -> AsyncIterator[bytes]:
        """The body of a ``multipart/x-mixed-replace`` response, one part per JPEG."""
        self._want()
        try:
            seq = 0
            while True:
                jpeg = await self.next_after(seq)
                if jpeg is None:
                    return
                seq = jpeg.seq
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg.data)}\r\n"
                        f"X-Frame-Index: {jpeg.index}\r\nX-Timestamp: {jpeg.timestamp:.3f}\r\n\r\n")
                yield head.encode() + jpeg.data + b"\r\n"
        finally:
            self._unwant()

    def stop(self) -> None:
        self._stopped = True
        self._changed.set()


class VideoFeeds:
    """One :class:`StreamFeed` per open stream, made on first view; gone with the stream."""

    def __init__(self, *, max_fps: float, quality: int, max_side: int) -> None:
        self.max_fps = max_fps
        self.quality = quality
        self.max_side = max_side
        self._feeds: dict[str, StreamFeed] = {}

    def feed(self, stream: Stream) -> StreamFeed:
        feed = self._feeds.get(stream.id)
        if feed is None or feed.stream is not stream:
            if feed is not None:
                feed.stop()
            feed = StreamFeed(stream, max_fps=self.max_fps, quality=self.quality, max_side=self.max_side)
            self._feeds[stream.id] = feed
        return feed

    def viewers(self) -> dict[str, int]:
        return {sid: f.viewers for sid, f in self._feeds.items()}

    def stop(self) -> None:
        for feed in self._feeds.values():
            feed.stop()
