"""Shared plumbing for sources read with ``cv2.VideoCapture``.

:class:`OpenCVSource` is the base of the camera, stream and video-file sources;
:func:`open_ffmpeg_capture` opens a URL with FFmpeg options and timeouts (also
meant for other plugins that read network streams through OpenCV).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import AfterValidator

from .errors import SourceError
from .source import Source, SourceInfo

__all__ = [
    "FFmpegOptionString",
    "FFmpegStreamSource",
    "NoFrameError",
    "OpenCVSource",
    "as_bgr",
    "capture_info",
    "has_gstreamer",
    "open_ffmpeg_capture",
    "parse_ffmpeg_options",
    "quiet_opencv",
]


# FFmpeg prints its own connection and decoding complaints to stderr; framelens's sources
# raise clearer errors themselves. Set OPENCV_FFMPEG_LOGLEVEL (e.g. 32) to see FFmpeg's again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


@cache
def has_gstreamer() -> bool:
    """Whether this OpenCV build can run GStreamer pipelines."""
    match = re.search(r"^\s*GStreamer:\s*(\w+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match and match.group(1).upper() == "YES")


_QUIET_LOCK = threading.Lock()
_quiet_depth = 0
_saved_level = 0


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings while opening: the source raises a clearer error itself.

    The log level is process-wide, so nested and concurrent users are counted
    and the level is restored when the last one leaves.
    """
    global _quiet_depth, _saved_level
    with _QUIET_LOCK:
        if _quiet_depth == 0:
            _saved_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cv2.utils.logging.setLogLevel(_saved_level)


class _SharedEnv:
    """Lets opens that need the same ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` run at once.

    OpenCV reads the variable when an open starts; opens with one value share it
    (all RTSP cameras of a run do), an open that needs another value waits until
    the current users are done. So a camera that takes its whole open timeout
    never holds up the opens of other cameras.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: str | None = None
        self._users = 0
        self._previous: str | None = None

    @contextmanager
    def using(self, ours: str) -> Iterator[None]:
        with self._cond:
            while self._users and self._value != ours:
                self._cond.wait()
            if self._users == 0:
                self._value = ours
                self._previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                if ours:
                    # FFmpeg's dictionary keeps the last value of a repeated key.
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(filter(None, [self._previous, ours]))
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    if self._previous is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = self._previous
                    self._value = None
                    self._cond.notify_all()


_ENV = _SharedEnv()


def open_ffmpeg_capture(url: str, *, options: Mapping[str, str] | None = None, open_timeout: float = 10.0,
                        read_timeout: float = 10.0) -> cv2.VideoCapture:
    """Open ``url`` with OpenCV's FFmpeg backend, passing FFmpeg ``options`` and timeouts.

    OpenCV reads FFmpeg options only from the ``OPENCV_FFMPEG_CAPTURE_OPTIONS``
    environment variable, at open time. This sets it for the duration of the
    open so that concurrent opens never see each other's options: opens with
    the same options run in parallel, an open with other options waits for
    them. Options the user put in that variable still apply; ``options`` win
    where both set a key.
    """
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
    ours = "|".join(f"{k};{v}" for k, v in (options or {}).items())
    with _ENV.using(ours):
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A 3-channel BGR view of a grey, BGR or BGRA image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def capture_info(cap: cv2.VideoCapture) -> SourceInfo:
    """What an opened capture reports; zeros (unknown) become ``None``."""
    def prop(p: int) -> float | None:
        value = float(cap.get(p))
        return value if value > 0 else None

    w, h, count = prop(cv2.CAP_PROP_FRAME_WIDTH), prop(cv2.CAP_PROP_FRAME_HEIGHT), prop(cv2.CAP_PROP_FRAME_COUNT)
    fps = prop(cv2.CAP_PROP_FPS)
    return SourceInfo(int(w) if w else None, int(h) if h else None,
                      round(fps, 3) if fps and fps < 1000 else None, int(count) if count else None)


class NoFrameError(SourceError):
    """The capture opened, but not even one frame could be read from it."""


class OpenCVSource(Source):
    """Base for sources read with ``cv2.VideoCapture``: subclasses implement ``_open_capture``.

    ``open()`` also reads the first frame (and hands it out on the first
    ``read()``), so a device or stream that opens but delivers nothing fails at
    open with a clear error instead of reconnecting for ever. Unknown sizes are
    taken from that frame.

    ``close()`` may come from another thread while ``read()`` waits for a frame
    (the runtime's capture thread); the capture is then released by ``read``
    when it returns, never under its feet.
    """

    kind = "source"

    def __init__(self, locator: str) -> None:
        super().__init__(locator)
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()
        self._reading = False
        self._release_pending = False
        self._first: np.ndarray | None = None

    def error(self, reason: str) -> SourceError:
        """A :class:`SourceError` that names this source (redacted) and ``reason``."""
        name = self.describe()
        return SourceError(f"{self.kind} {name}: {reason}" if name != self.kind else f"{name}: {reason}")

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def open(self) -> SourceInfo:
        self.close()
        with quiet_opencv():
            cap = self._open_capture()
        if not cap.isOpened():
            cap.release()
            raise self.error(self._why_not_opened())
        with self._lock:
            self._cap, self._release_pending = cap, False
        info = capture_info(cap)
        first = self._grab()
        if first is None:
            self.close()
            raise NoFrameError(self.error(self._no_first_frame()).args[0])
        self._first = first
        if info.width is None or info.height is None:
            info = SourceInfo(first.shape[1], first.shape[0], info.fps, info.frame_count)
        return info

    def _why_not_opened(self) -> str:
        return "OpenCV could not open it"

    def _no_first_frame(self) -> str:
        return "opened, but no frame could be read from it"

    def read(self) -> np.ndarray | None:
        first, self._first = self._first, None
        if first is not None:
            return first
        image = self._grab()
        return image if image is not None else self._read_failed()

    def _grab(self) -> np.ndarray | None:
        with self._lock:
            cap = self._cap
            if cap is None:
                raise self.error("read() before open()")
            self._reading = True
        try:
            ok, image = cap.read()
        finally:
            with self._lock:
                self._reading = False
                if self._release_pending:
                    cap.release()
                    self._cap, self._release_pending = None, False
        return as_bgr(image) if ok and image is not None else None

    def _read_failed(self) -> np.ndarray | None:
        if self.live:  # LiveCapture reports it and reconnects with backoff
            raise self.error("no frame: the stream ended, stalled, or could not be decoded")
        return None

    def close(self) -> None:
        with self._lock:
            self._first = None
            if self._cap is None:
                return
            if self._reading:
                self._release_pending = True
                return
            self._cap.release()
            self._cap = None


def parse_ffmpeg_options(text: str) -> dict[str, str]:
    """``key;value|key;value`` (OpenCV's OPENCV_FFMPEG_CAPTURE_OPTIONS syntax) as a dict.

    Raises :class:`ValueError` naming the first pair that is not ``key;value``.
    """
    opts: dict[str, str] = {}
    for pair in filter(None, text.split("|")):
        key, sep, value = pair.partition(";")
        if not sep or not key.strip():
            raise ValueError(f"{pair!r} is not key;value (separate pairs with |)")
        opts[key.strip()] = value.strip()
    return opts


def _check_ffmpeg_options(value: str) -> str:
    parse_ffmpeg_options(value)
    return value


FFmpegOptionString = Annotated[str, AfterValidator(_check_ffmpeg_options)]
"""An option field holding extra FFmpeg options as ``key;value|key;value``."""


class FFmpegStreamSource(OpenCVSource):
    """A network stream read through OpenCV's FFmpeg backend, with open/read timeouts.

    ``options`` must have ``open_timeout``, ``read_timeout`` and ``ffmpeg_options``;
    subclasses give their defaults in ``base_ffmpeg_options`` and the user's extra
    options override them.
    """

    options: Any

    def base_ffmpeg_options(self) -> dict[str, str]:
        return {}

    def ffmpeg_options(self) -> dict[str, str]:
        return {**self.base_ffmpeg_options(), **parse_ffmpeg_options(self.options.ffmpeg_options)}

    def _open_capture(self) -> cv2.VideoCapture:
        o = self.options
        return open_ffmpeg_capture(self.locator, options=self.ffmpeg_options(), open_timeout=o.open_timeout,
                                   read_timeout=o.read_timeout)

