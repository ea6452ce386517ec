"""``fps``: draw the measured frame rate on the video.

The rate is a moving average over the last ``window`` seconds of frames passing
this stage, which is the rate the pipeline delivers to its outputs when ``fps``
is placed last. The value is also left in ``frame.results["fps"]`` (a float).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Literal

from framelens import Context, Field, Frame, Options, Processor, RegisterFn
from framelens.drawing import Colour, TextStyle, parse_colour

from .sprite import SpriteCache

__all__ = ["FpsMeter", "FpsOptions", "FpsProcessor"]


class FpsOptions(Options):
    position: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = Field(
        "top-right", description="Corner to draw in")
    window: float = Field(1.0, gt=0, le=60, description="Seconds the moving average covers")
    size: float = Field(1.0, gt=0, le=10, description="Text size; 1.0 is about 1/28 of the frame height")
    color: Colour = Field("yellow", description="Text colour: a name or #rrggbb")
    background: Colour = Field("black", description="Colour of the box behind the text")
    opacity: float = Field(0.6, ge=0, le=1, description="Opacity of the box behind the text")


class FpsMeter:
    """Frames per second over a sliding time window."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> float | None:
        """Count one frame; the rate so far, or ``None`` until there are two frames."""
        now = time.monotonic() if now is None else now
        times = self._times
        times.append(now)
        while len(times) > 2 and now - times[0] > self.window:
            times.popleft()
        span = times[-1] - times[0]
        return (len(times) - 1) / span if len(times) > 1 and span > 0 else None


class FpsProcessor(Processor):
    """Draws ``NN.N fps`` in a corner of a copy of each frame, touching only the corner's box.

    Each reading is rasterised once (:mod:`.sprite`) and blended onto the box;
    the frame is copied because the image a stage gets is shared with the
    describer's worker and ``stream://`` clients.
    """

    def __init__(self, options: FpsOptions) -> None:
        self.options = options
        self.meter = FpsMeter(options.window)
        self.colour = parse_colour(options.color)
        self.background = parse_colour(options.background)
        self.sprites = SpriteCache(256)

    def process(self, frame: Frame) -> Frame:
        fps = self.meter.tick()
        if fps is None:
            return frame
        frame.results["fps"] = round(fps, 2)
        text = f"{fps:.1f} fps"
        image = frame.image.copy()
        h, w = image.shape[:2]
        key = (h, text)
        sprite = self.sprites.peek(key) or self.sprites.get(
            key, [text], TextStyle.for_frame(h, self.options.size), colour=self.colour, background=self.background,
            opacity=self.options.opacity)
        margin = max(2, h // 60)
        vertical, horizontal = self.options.position.split("-")
        x = margin if horizontal == "left" else w - margin - sprite.width
        y = margin if vertical == "top" else h - margin - sprite.height
        sprite.draw(image, x, y)
        return frame.replace(image=image)


def register(register: RegisterFn) -> None:
    def make(options: FpsOptions, context: Context) -> FpsProcessor:
        return FpsProcessor(options)

    register("fps", make, options=FpsOptions, help="draw the measured frames per second (moving average)")
