"""An example framelens plugin: turns frames gray, optionally keeping a tint.

Install it with ``pip install ./docs/example-plugin`` and run::

    framelens run -s testpattern -p grayscale -c grayscale-tint=0.2 -o mjpeg
"""

from __future__ import annotations

import cv2
import numpy as np

from framelens import Context, Field, Frame, Options, Processor, RegisterFn, hookimpl


class GrayscaleOptions(Options):
    tint: float = Field(0.0, ge=0.0, le=1.0, description="How much of the original colour to keep (0-1)")


class Grayscale(Processor):
    """Replaces the image with its grayscale version, blended with ``tint`` of the colour one."""

    def __init__(self, options: GrayscaleOptions) -> None:
        self.tint = options.tint

    def process(self, frame: Frame) -> Frame:
        gray = cv2.cvtColor(cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if self.tint:
            gray = cv2.addWeighted(frame.image, self.tint, gray, 1.0 - self.tint, 0.0)
        frame.results["grayscale"] = {"mean": float(np.mean(gray))}
        return frame.replace(image=gray)


@hookimpl
def register_processors(register: RegisterFn) -> None:
    def make(options: GrayscaleOptions, context: Context) -> Grayscale:
        return Grayscale(options)

    register("grayscale", make, options=GrayscaleOptions, help="convert frames to grayscale")
