"""The source contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

__all__ = ["Source", "SourceInfo", "redact"]


@dataclass(frozen=True)
class SourceInfo:
    """What a source knows about its stream once opened; unknown values are ``None``."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frame_count: int | None = None


class Source(ABC):
    """Produces images. The runtime calls ``open()``, then ``read()`` repeatedly, then ``close()``.

    Set ``live = True`` for cameras and network streams: the runtime then reads
    them on a capture thread that keeps only the newest image (counting the rest
    as dropped), and reopens them with backoff when ``read`` raises
    :class:`~framelens.SourceError` or returns ``None``. Sources with
    ``live = False`` (files, images) are read in the loop, every image in turn;
    ``None`` from ``read`` means the end.

    ``open`` raises :class:`~framelens.SourceError` naming the source and the reason
    when it cannot be opened. ``reconnect = False`` turns off reopening for a live
    source that cannot come back (a test pattern).
    """

    live: bool = False
    reconnect: bool = True

    def __init__(self, locator: str) -> None:
        self.locator = locator

    @abstractmethod
    def open(self) -> SourceInfo:
        """Open the device, file or stream."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next BGR image, or ``None`` at the end of the stream."""

    def close(self) -> None:
        """Release the device. Must be safe to call twice. Default: nothing."""

    def describe(self) -> str:
        """How the source names itself in logs and events (never includes passwords)."""
        return redact(self.locator)


def redact(locator: str) -> str:
    """``rtsp://user:secret@cam/`` -> ``rtsp://user:***@cam/``."""
    scheme, sep, rest = locator.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return locator
    creds, host = rest.split("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
