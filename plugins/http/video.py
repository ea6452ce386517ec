"""``video_url`` parts (NIM's extension): sample frames from a file, a data URI or a live source.

Sampling follows NIM's ``media_io_kwargs.video``: ``fps`` (frames per second
of video) or ``num_frames`` (evenly spaced), never both; asking for more than
the video has is a 400, as NIM answers. Backends that take video get the
encoded file with the requested sampling (they sample it themselves); the
others get the sampled frames, which the caller sends as several images.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from framelens import VideoPart

from .errors import ApiError
from .live import LiveSources, is_live_url
from .media import MediaResolver
from .options import HttpOptions
from .schema import VideoSampling

__all__ = ["VideoSampler", "sample_indices"]

_VIDEO_TYPES_OK = ("application/octet-stream", "binary/octet-stream", "")
_FPS = "media_io_kwargs.video.fps"
_NUM = "media_io_kwargs.video.num_frames"


@dataclass(frozen=True)
class _Plan:
    fps: float | None
    num_frames: int | None


def sample_indices(total: int, native_fps: float, plan: _Plan, *, default_fps: float, max_frames: int) -> list[int]:
    """Which frame numbers of a ``total``-frame video at ``native_fps`` to take, oldest first."""
    if plan.num_frames is not None:
        if plan.num_frames > total:
            raise ApiError(400, f"num_frames={plan.num_frames} but the video has {total} frames", param=_NUM)
        if plan.num_frames > max_frames:
            raise ApiError(400, f"num_frames={plan.num_frames}; at most {max_frames} frames are sampled "
                           "(-c http-max-video-frames)", param=_NUM)
        return _spread(total, plan.num_frames)
    rate = plan.fps or default_fps
    if plan.fps is not None and native_fps > 0 and plan.fps > native_fps + 1e-6:
        raise ApiError(400, f"fps={plan.fps:g} is higher than the video's {native_fps:g} fps", param=_FPS)
    step = (native_fps / rate) if native_fps > 0 else 1.0
    indices = sorted({min(total - 1, round(i * step)) for i in range(max(1, math.ceil(total / step)))})
    if len(indices) > max_frames:
        if plan.fps is not None:
            raise ApiError(400, f"fps={plan.fps:g} samples {len(indices)} frames; at most {max_frames} are "
                           "allowed (-c http-max-video-frames)", param=_FPS)
        return _spread(total, max_frames)
    return indices


def _spread(total: int, count: int) -> list[int]:
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def _read_video(data: bytes, plan: _Plan, options: HttpOptions, decode: bool) -> tuple[np.ndarray, ...]:
    """Probe (and with ``decode`` sample) an encoded video; runs in a worker thread."""
    with tempfile.NamedTemporaryFile(suffix=".video") as tmp:
        tmp.write(data)
        tmp.flush()
        cap = cv2.VideoCapture(tmp.name)
        try:
            if not cap.isOpened():
                raise ApiError(422, "the video could not be decoded", param="video_url", code="invalid_video")
            native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if total <= 0:
                total = 0
                while cap.grab():
                    total += 1
                cap.release()
                cap = cv2.VideoCapture(tmp.name)
            if total <= 0:
                raise ApiError(422, "the video has no decodable frames", param="video_url", code="invalid_video")
            wanted = sample_indices(total, native, plan, default_fps=options.video_fps,
                                    max_frames=options.max_video_frames)
            if not decode:
                ok, _ = cap.read()
                if not ok:
                    raise ApiError(422, "the video's first frame could not be decoded", param="video_url",
                                   code="invalid_video")
                return ()
            frames: list[np.ndarray] = []
            targets = set(wanted)
            for index in range(wanted[-1] + 1):
                if not cap.grab():
                    break
                if index in targets:
                    ok, image = cap.retrieve()
                    if ok:
                        frames.append(image)
            if not frames:
                raise ApiError(422, "no frame of the video could be decoded", param="video_url",
                               code="invalid_video")
            return tuple(frames)
        finally:
            cap.release()


class VideoSampler:
    """Builds the :class:`VideoPart` for one ``video_url``."""

    def __init__(self, media: MediaResolver, live: LiveSources, options: HttpOptions) -> None:
        self.media = media
        self.live = live
        self.options = options

    async def video(self, url: str, sampling: VideoSampling | None, param: str, *, encoded_ok: bool) -> VideoPart:
        """Frames (or, with ``encoded_ok``, the encoded file) that ``url`` names."""
        plan = _Plan(sampling.fps if sampling else None, sampling.num_frames if sampling else None)
        url = url.strip()
        if is_live_url(url):
            return await self._live(url, plan, param)
        mime, data = await self.media.load(url, param, what="video", max_bytes=self.options.max_video_bytes)
        if not (mime.startswith("video/") or mime in _VIDEO_TYPES_OK):
            raise ApiError(415, f"unsupported content type {mime!r} for a video", param=param,
                           code="unsupported_video_type")
        frames = await asyncio.to_thread(_read_video, data, plan, self.options, not encoded_ok)
        if encoded_ok:
            return VideoPart(data=data, fps=plan.fps, num_frames=plan.num_frames)
        return VideoPart(frames=frames, fps=plan.fps, num_frames=plan.num_frames)

    async def _live(self, url: str, plan: _Plan, param: str) -> VideoPart:
        stream = await self.live.resolve(url, param)
        rate = plan.fps or self.options.video_fps
        count = plan.num_frames or max(1, round(rate * self.options.live_video_seconds))
        if count > self.options.max_video_frames:
            raise ApiError(400, f"{count} frames requested from a live source; at most "
                           f"{self.options.max_video_frames} (-c http-max-video-frames)",
                           param=_NUM if plan.num_frames else _FPS)
        frames = await self.live.sample(stream, count, 1.0 / rate, param)
        return VideoPart(frames=tuple(f.image for f in frames), fps=rate)
