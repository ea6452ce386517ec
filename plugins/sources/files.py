"""Sources that play files: a video, a single image, a folder or glob of images.

They are not live: the runtime reads every frame in turn (``--realtime`` paces
them at their frame rate, ``--loop`` starts them again at the end).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from framelens import Field, Options, Source, SourceError, SourceInfo, decode_image
from framelens.opencv import OpenCVSource, as_bgr

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageSequenceSource",
    "ImageSource",
    "StillOptions",
    "VideoFileSource",
    "is_glob",
    "natural_key",
]

log = logging.getLogger("framelens.sources")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
     ".pxm", ".sr", ".ras", ".jp2", ".exr", ".hdr", ".pic", ".avif"}
)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv",
     ".ogv", ".3gp", ".mjpeg", ".mjpg", ".h264", ".264", ".h265", ".265", ".hevc", ".y4m", ".gif"}
)
_GLOB = re.compile(r"[*?\[]")


def is_glob(locator: str) -> bool:
    """Whether ``locator`` is a glob pattern rather than one path."""
    return bool(_GLOB.search(locator))


def natural_key(path: str) -> list[Any]:
    """Sort key that puts ``frame2.png`` before ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def _check_file(source: OpenCVSource, path: str) -> None:
    if not os.path.exists(path):
        raise source.error("no such file")
    if not os.path.isfile(path):
        raise source.error("not a regular file")
    if not os.access(path, os.R_OK):
        raise source.error("permission denied")


class VideoFileSource(OpenCVSource):
    """A video file, decoded with FFmpeg. Fails at open if not even one frame decodes."""

    kind = "video file"

    def _open_capture(self) -> cv2.VideoCapture:
        _check_file(self, self.locator)
        return cv2.VideoCapture(self.locator, cv2.CAP_FFMPEG)

    def _why_not_opened(self) -> str:
        return "FFmpeg cannot read it (not a video, or a codec this OpenCV build lacks)"

    def _no_first_frame(self) -> str:
        return "contains no decodable frames"


class StillOptions(Options):
    fps: float | None = Field(None, gt=0, description="Frame rate to play at with --realtime (also --fps)")


class ImageSource(Source):
    """One image file: a single frame, then the end (``--loop`` shows it again)."""

    def __init__(self, locator: str, options: StillOptions) -> None:
        super().__init__(locator)
        self.options = options
        self._image: np.ndarray | None = None
        self._done = False

    def open(self) -> SourceInfo:
        if self._image is None:
            self._image = _load_image(self.locator, "image")
        self._done = False
        h, w = self._image.shape[:2]
        return SourceInfo(w, h, self.options.fps, 1)

    def read(self) -> np.ndarray | None:
        if self._done or self._image is None:
            return None
        self._done = True
        return self._image


def _load_image(path: str, kind: str) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{kind} {path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{kind} {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        return as_bgr(decode_image(data))
    except ValueError:
        raise SourceError(f"{kind} {path}: not an image OpenCV can decode") from None


class ImageSequenceSource(Source):
    """Every image of a folder, or every file matching a glob, in natural order.

    A file that does not decode is skipped with a warning naming it.
    """

    def __init__(self, locator: str, options: StillOptions) -> None:
        super().__init__(locator)
        self.options = options
        self.paths: list[str] = []
        self.skipped: list[str] = []
        self._next = 0

    def _list(self) -> list[str]:
        if os.path.isdir(self.locator):
            names = (os.path.join(self.locator, n) for n in os.listdir(self.locator))
            paths = [p for p in names if Path(p).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(p)]
            what = "no image files (.jpg, .png, .bmp, .webp, .tif, ...) in this folder"
        else:
            paths = [p for p in glob.glob(self.locator, recursive=True) if os.path.isfile(p)]
            what = "no files match the pattern"
        if not paths:
            raise SourceError(f"images {self.locator}: {what}")
        return sorted(paths, key=natural_key)

    def open(self) -> SourceInfo:
        if not self.paths:
            self.paths = self._list()
        self._next = 0
        first = self._peek_size()
        return SourceInfo(first[1], first[0], self.options.fps, len(self.paths))

    def _peek_size(self) -> tuple[int, ...]:
        for path in self.paths:
            try:
                return tuple(_load_image(path, "image").shape[:2])
            except SourceError as exc:
                self._skip(path, exc)
        raise SourceError(f"images {self.locator}: none of the {len(self.paths)} files is a decodable image")

    def read(self) -> np.ndarray | None:
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            try:
                return _load_image(path, "image")
            except SourceError as exc:
                self._skip(path, exc)
        return None

    def _skip(self, path: str, exc: SourceError) -> None:
        if path not in self.skipped:  # warn once, also when --loop plays the files again
            self.skipped.append(path)
            log.warning("%s; skipping it", exc)
