"""The ``grayscale`` processor: turns frames gray, optionally keeping a tint of the colour."""

from __future__ import annotations

import cv2
import numpy as np

from framelens import Context, Field, Frame, Options, Processor

__all__ = ["Grayscale", "GrayscaleOptions", "GrayscaleStats"]


class GrayscaleOptions(Options):
    tint: float = Field(0.0, ge=0.0, le=1.0, description="How much of the original colour to keep (0-1)")


class GrayscaleStats:
    """The run-wide numbers the HTTP route reports (kept in ``context.state``)."""

    def __init__(self) -> None:
        self.frames = 0
        self.last_mean: float | None = None


class Grayscale(Processor):
    """Replaces the image with its grayscale version, blended with ``tint`` of the colour one.

    Each frame gets a frame-local result ``frame.results[id] = {"mean": ...}``; the
    run-wide counters live in ``context.state("grayscale", GrayscaleStats)``.
    """

    def __init__(self, options: GrayscaleOptions, context: Context, id: str = "grayscale") -> None:
        self.tint = options.tint
        self.id = id
        self.stats_ = context.state("grayscale", GrayscaleStats)

    def process(self, frame: Frame) -> Frame:
        gray = cv2.cvtColor(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if self.tint:
            gray = cv2.addWeighted(frame.image, self.tint, gray, 1.0 - self.tint, 0.0)
        mean = float(np.mean(gray))
        frame.results[self.id] = {"mean": mean}
        self.stats_.frames += 1
        self.stats_.last_mean = mean
        return frame.replace(image=gray)
