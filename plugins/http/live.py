"""Live sources named in requests: open them once, keep them, hand out their newest frames.

``v4l2:///dev/video0``, ``csi://0`` and ``rtsp://...`` in an ``image_url`` open
the source through ``context.streams`` (as the vila microservice does): it stays
open for later requests and for the pipeline's outputs. ``stream://ID`` names a
source that is already open (``-s`` at start is ``stream://main``).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from framelens import ConfigError, Context, Frame, SourceError, Stream

from .errors import ApiError
from .options import HttpOptions

__all__ = ["LIVE_SCHEMES", "LiveSources", "is_live_url"]

LIVE_SCHEMES = ("v4l2", "csi", "rtsp", "rtsps")
_POLL_S = 0.01


def is_live_url(url: str) -> bool:
    """True for ``stream://ID`` and the URL schemes of cameras and network streams."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    return scheme == "stream" or scheme in LIVE_SCHEMES


class LiveSources:
    """Resolves live URLs to open streams and reads their newest frames without blocking the loop."""

    def __init__(self, context: Context, options: HttpOptions) -> None:
        self.context = context
        self.options = options

    def get(self, stream_id: str, param: str | None = None) -> Stream:
        try:
            return self.context.streams.get(stream_id)
        except KeyError:
            known = ", ".join(s.id for s in self.context.streams.list()) or "none open"
            raise ApiError(404, f"no stream {stream_id!r} (open streams: {known}; GET /v1/streams lists them)",
                           param=param, code="stream_not_found") from None

    async def resolve(self, url: str, param: str | None) -> Stream:
        """The open stream for ``url`` (``stream://ID`` or a live source URL), opening it if needed."""
        if url.lower().startswith("stream://"):
            return self.get(url[len("stream://"):].strip("/"), param)
        existing = self.context.streams.find_url(url)
        if existing is not None:
            return existing
        return await self.open(url, param=param)

    async def open(self, url: str, *, param: str | None = None, id: str | None = None,
                   description: str = "") -> Stream:
        """Open ``url`` as a kept stream (or return the one already open for it)."""
        if not self.options.open_sources:
            raise ApiError(403, f"opening live sources from requests is turned off ({url}); open it with -s, "
                           "or allow it with -c http-open-sources=true", param=param, code="url_not_allowed")
        try:
            stream = await asyncio.to_thread(
                self.context.streams.open, url, id=id, description=description, origin="api"
            )
        except SourceError as exc:
            raise ApiError(422, f"cannot open live source: {exc}", param=param, code="source_unavailable") from None
        except ConfigError as exc:
            raise ApiError(400, f"not a source framelens can open: {exc}", param=param,
                           code="invalid_source") from None
        except ValueError as exc:  # duplicate id
            raise ApiError(409, str(exc), param="id", code="stream_exists") from None
        if not stream.capture.source.live:
            await asyncio.to_thread(self.context.streams.remove, stream.id)
            raise ApiError(400, f"{url} is not a live source (send files as video_url or image_url)",
                           param=param, code="invalid_source")
        return stream

    async def newest(self, stream: Stream, param: str | None, *, after: int = -1,
                     timeout: float | None = None) -> Frame:
        """The stream's newest frame with an index above ``after``, waiting for one if needed."""
        capture = stream.capture
        deadline = time.monotonic() + (timeout or self.options.first_frame_timeout)
        while True:
            frame = capture.latest()
            if capture.state in ("lost", "ended"):
                reason = f": {capture.error}" if capture.error else ""
                raise ApiError(503, f"stream {stream.id!r} is {capture.state}{reason}", param=param,
                               code="source_unavailable")
            if frame is not None and frame.index > after:
                return frame
            if time.monotonic() >= deadline:
                raise ApiError(503, f"stream {stream.id!r} gave no new frame in time", param=param,
                               code="source_unavailable")
            await asyncio.sleep(_POLL_S)

    async def sample(self, stream: Stream, count: int, interval: float, param: str | None) -> list[Frame]:
        """``count`` distinct frames about ``interval`` seconds apart, oldest first."""
        frames = [await self.newest(stream, param)]
        while len(frames) < count:
            await asyncio.sleep(interval)
            frames.append(await self.newest(stream, param, after=frames[-1].index,
                                            timeout=max(2.0, 4 * interval)))
        return frames
