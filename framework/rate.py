"""The core's rate options for every processor: ``-c NAME-every=N`` and ``-c NAME-max-fps=F``.

An expensive processor (``facedetect`` costs 18 ms of CPU a frame at 720p) need not run
on every frame of every camera. The runtime, not each processor, decides whether a
stage runs on a frame; on the frames in between, the results the stage put on the
frame the last time it ran are put back (sticky), so overlays keep drawing them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .frame import Frame
from .options import Field, Options

__all__ = ["RATE_KEYS", "RateGate", "RateOptions"]


class RateOptions(Options):
    """Options the runtime adds to every processor's namespace."""

    every: int = Field(1, ge=1, description="Run this processor on every Nth frame only (core option; its results "
                                            "stay on the frames in between)")
    max_fps: float | None = Field(None, gt=0, description="Run this processor at most this many times a second "
                                                           "(core option; its results stay on the frames in between)")


RATE_KEYS = frozenset({"every", "max-fps"})
"""The option keys that belong to the runtime, not to the processor."""


class RateGate:
    """Decides, frame by frame, whether a stage runs, and keeps what its last run produced.

    ``every`` counts the frames offered to the stage (the first one runs); ``max_fps``
    measures on the monotonic clock. Both may be set: a frame must pass both.
    """

    def __init__(self, options: RateOptions) -> None:
        self.every = options.every
        self.min_interval = 1.0 / options.max_fps if options.max_fps else 0.0
        self._count = 0
        self._last_run = -1e18
        self.skipped = 0
        self.last_results: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        """False when the stage runs on every frame (the gate costs nothing then)."""
        return self.every > 1 or self.min_interval > 0

    def admit(self) -> bool:
        """True if the stage runs on this frame; counts the skip otherwise."""
        n = self._count
        self._count += 1
        if n % self.every:
            self.skipped += 1
            return False
        if self.min_interval:
            now = time.monotonic()
            if now - self._last_run < self.min_interval:
                self.skipped += 1
                # The Nth-frame count restarts at the next frame that runs, so every=N and max-fps compose.
                self._count = n
                return False
            self._last_run = now
        return True

    def remember(self, before: Mapping[str, Any], after: Frame) -> None:
        """Keep the results the stage added or replaced on this frame (``before``: a copy of
        the frame's results taken just before the stage ran)."""
        self.last_results = {k: v for k, v in after.results.items() if k not in before or before[k] is not v}

    def replay(self, frame: Frame) -> Frame:
        """Put the results of the stage's last run on a skipped frame (sticky results of a
        background processor are already there and are not overwritten)."""
        for key, value in self.last_results.items():
            if key not in frame.results:
                frame.results[key] = value
        return frame
