"""``captions``: draw what other processors found, as legible text on the video.

Every result that is a :class:`framelens.Caption` or implements
:class:`framelens.HasCaption` is drawn (``framelens.captions_of``), so a new
plugin gets its text on screen by returning one, without knowing this module.
Alerts (level ``alert``) become a red banner across the top; ``error`` and
``warning`` captions are drawn in their own colours; the rest at ``position``.
Text size follows the frame height, so it reads the same at 240p and 4K.

The text helpers live in :mod:`framelens.drawing`, shared with every overlay.

Drawing touches the caption boxes only: each box is rasterised once per text
(:class:`~.sprite.TextSprite`) and blended onto the box's pixels of every
frame. The frame itself is still copied once, because the image a stage gets
is shared: the describer's worker may be about to send it to the model and
``stream://`` clients read it, and neither must see captions drawn into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from framelens import Caption, CommaList, Context, Field, Frame, Options, Processor, RegisterFn, captions_of
from framelens.drawing import ALERT_BANNER, COLOURS, LEVEL_COLOURS, Colour, TextStyle, parse_colour, wrap

from .sprite import SpriteCache

__all__ = ["CaptionsOptions", "CaptionsProcessor"]

class CaptionsOptions(Options):
    position: Literal["top", "bottom"] = Field("bottom", description="Where normal captions go (alerts: always top)")
    size: float = Field(1.0, gt=0, le=10, description="Text size; 1.0 is about 1/28 of the frame height")
    color: Colour = Field("white", description="Text colour: a name (white, yellow, ...) or #rrggbb")
    background: Colour = Field("black", description="Colour of the box behind the text")
    opacity: float = Field(0.6, ge=0, le=1, description="Opacity of the box behind the text; 0 draws no box")
    max_lines: int = Field(4, ge=1, le=50, description="Most lines per caption; longer text ends in ...")
    keys: CommaList = Field(default_factory=list, description="Only draw these result keys (default: every caption)")


class CaptionsProcessor(Processor):
    """Draws every caption in ``frame.results`` on a copy of the frame."""

    def __init__(self, options: CaptionsOptions) -> None:
        self.options = options
        self.colour = parse_colour(options.color)
        self.background = parse_colour(options.background)
        self.sprites = SpriteCache()

    def process(self, frame: Frame) -> Frame:
        captions = [(k, c) for k, c in captions_of(frame.results) if not self.options.keys or k in self.options.keys]
        if not captions:
            return frame
        image = frame.image.copy()
        self.draw(image, [c for _, c in captions])
        return frame.replace(image=image)

    def draw(self, image: np.ndarray, captions: Sequence[Caption]) -> None:
        """Lay out and draw ``captions`` on ``image`` (in place: pass a copy). Only the boxes are touched."""
        o = self.options
        h, w = image.shape[:2]
        style = TextStyle.for_frame(h, o.size)
        margin = max(2, h // 60)
        text_w = w - 2 * margin - 2 * style.pad
        top = 0
        for cap in (c for c in captions if c.level == "alert"):
            alert_key = ("alert", h, w, cap.text)
            banner = self.sprites.peek(alert_key) or self.sprites.get(
                alert_key, wrap(cap.text, style, w - 2 * style.pad - 2 * margin, max(2, o.max_lines)), style,
                colour=COLOURS["white"], background=ALERT_BANNER, opacity=max(o.opacity, 0.85), width=w - 2 * margin)
            top += banner.draw(image, margin, top)
        blocks = []
        for c in captions:
            if c.level == "alert":
                continue
            key = ("caption", h, w, c.level, c.text)
            sprite = self.sprites.peek(key)
            if sprite is None:
                # Wrapping measures every word; only new text pays for it.
                sprite = self.sprites.get(key, wrap(c.text, style, text_w, o.max_lines), style,
                                          colour=LEVEL_COLOURS.get(c.level, self.colour), background=self.background,
                                          opacity=o.opacity)
            blocks.append(sprite)
        y = top + margin if o.position == "top" else h - margin - sum(b.height for b in blocks)
        for sprite in blocks:
            y += sprite.draw(image, margin, max(y, top))


def register(register: RegisterFn) -> None:
    def make(options: CaptionsOptions, context: Context) -> CaptionsProcessor:
        return CaptionsProcessor(options)

    register("captions", make, options=CaptionsOptions,
             help="draw captions, alerts (red banner) and errors from other processors on the video")
