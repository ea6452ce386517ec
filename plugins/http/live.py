"""Live sources named in requests: open them once, keep them, hand out their newest frames.

``v4l2:///dev/video0``, ``csi://0`` and ``rtsp://...`` in an ``image_url`` open
the source through ``context.streams`` (as the vila microservice does): it stays
open for later requests and for the pipeline's outputs. ``stream://ID`` names a
source that is already open (``-s`` at start is ``stream://main``).

What a request may open is narrower than ``-s``: ``v4l2://`` only names
``/dev/videoN`` or ``/dev/v4l/...`` (one 400 for anything else, so the API
does not tell which files exist), network URLs pass the private-address policy
of :mod:`.egress` and are dialled at the checked address, every open has a
timeout and runs on the :class:`~.opens.OpenGate` pool, and every failure to
open answers one uniform 422 (the reason goes to the server log only).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from urllib.parse import unquote, urlsplit

from framelens import ConfigError, Context, Frame, SourceError, Stream, redact

from .egress import NETWORK_SCHEMES, UrlPolicy
from .errors import ApiError
from .opens import CLIENT, OpenGate
from .options import HttpOptions

__all__ = ["LIVE_SCHEMES", "LiveSources", "is_live_url"]

LIVE_SCHEMES = ("v4l2", "csi", "rtsp", "rtsps")
_POLL_S = 0.01
_DEVICE = re.compile(r"^/dev/(video[0-9]{1,3}|v4l/[A-Za-z0-9_.:/-]{1,200})$")

log = logging.getLogger("framelens.http")


def unavailable(url: str, param: str | None) -> ApiError:
    """The one answer for a live source that could not be opened, whatever the reason."""
    return ApiError(422, f"could not open the live source {redact(url)[:200]} (it did not answer in time, refused, "
                    "or sent no video); the server log has the reason", param=param, code="source_unavailable")


def check_device_url(url: str, param: str | None) -> None:
    """400 unless a ``v4l2://`` URL names a video device node (the same 400 for every other path)."""
    path = unquote(urlsplit(url).path or urlsplit(url).netloc)
    if ".." in path.split("/") or not _DEVICE.match(path):
        raise ApiError(400, "v4l2:// URLs in requests must name a video device: v4l2:///dev/videoN or "
                       "v4l2:///dev/v4l/by-id/...", param=param, code="invalid_source")


def is_live_url(url: str) -> bool:
    """True for ``stream://ID`` and the URL schemes of cameras and network streams."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    return scheme == "stream" or scheme in LIVE_SCHEMES


class LiveSources:
    """Resolves live URLs to open streams and reads their newest frames without blocking the loop."""

    def __init__(self, context: Context, options: HttpOptions) -> None:
        self.context = context
        self.options = options
        self.policy = UrlPolicy(allow_private=options.allow_private_urls)
        self.gate = OpenGate(total=options.max_opens, per_client=options.max_opens_per_client,
                             timeout=options.open_timeout)

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
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        connect_url: str | None = None
        if scheme == "v4l2":
            check_device_url(url, param)
        elif scheme in NETWORK_SCHEMES:
            pinned = await self.policy.pin(url, param, unreachable=unavailable(url, param))
            connect_url = pinned.connect_url
        streams = self.context.streams

        def open_stream() -> Stream:
            return streams.open(url, id=id, description=description, origin="api", connect_url=connect_url)

        def close_late(stream: Stream) -> None:
            log.info("live source %s opened after the request gave up; closing it", redact(url))
            try:
                streams.remove(stream.id)
            except KeyError:
                pass

        try:
            stream = await self.gate.run(open_stream, on_late=close_late, timed_out=lambda: self._timed_out(url, param))
        except SourceError as exc:
            log.warning("[%s] cannot open live source %s: %s", CLIENT.get(), redact(url), exc)
            raise unavailable(url, param) from None
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

    def _timed_out(self, url: str, param: str | None) -> ApiError:
        log.warning("[%s] live source %s did not open within %g s (-c http-open-timeout)", CLIENT.get(),
                    redact(url), self.options.open_timeout)
        return unavailable(url, param)

    async def newest(self, stream: Stream, param: str | None, *, after: int = -1,
                     timeout: float | None = None) -> Frame:
        """The stream's newest frame with an index above ``after``, waiting for one if needed."""
        capture = stream.capture
        deadline = time.monotonic() + (timeout or self.options.first_frame_timeout)
        while True:
            frame = capture.latest()
            state = capture.state
            if state in ("lost", "ended"):
                reason = f": {capture.error}" if capture.error else ""
                raise ApiError(503, f"stream {stream.id!r} is {state}{reason}", param=param,
                               code="source_unavailable", headers={"Retry-After": "1"})
            if state == "stale":
                raise self.stale(stream, param)
            if frame is not None and frame.index > after:
                return frame
            if time.monotonic() >= deadline:
                raise ApiError(503, f"stream {stream.id!r} gave no new frame in time", param=param,
                               code="source_unavailable")
            await asyncio.sleep(_POLL_S)

    def stale(self, stream: Stream, param: str | None) -> ApiError:
        """The 503 for a stream whose source stopped delivering frames."""
        age = stream.capture.frame_age()
        return ApiError(503, f"stream {stream.id!r} is stale: no new frame for {age:.1f} s (the camera stopped "
                        "sending; it is declared lost and reconnected after its read timeout)", param=param,
                        code="source_stale", headers={"Retry-After": "1"})

    async def sample(self, stream: Stream, count: int, interval: float, param: str | None) -> list[Frame]:
        """``count`` distinct frames about ``interval`` seconds apart, oldest first."""
        frames = [await self.newest(stream, param)]
        while len(frames) < count:
            await asyncio.sleep(interval)
            frames.append(await self.newest(stream, param, after=frames[-1].index,
                                            timeout=max(2.0, 4 * interval)))
        return frames
