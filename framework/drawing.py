"""Drawing text on frames: colours, font metrics, word wrap and translucent text boxes.

Public helpers for overlay plugins (``captions``, ``fps`` and ``facedetect`` use
them too), so every overlay picks colours and sizes text the same way::

    from framelens.drawing import Colour, TextStyle, draw_block, parse_colour

Text size follows the frame height, so it reads the same at 240p and 4K.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np
from pydantic import AfterValidator

__all__ = [
    "ALERT_BANNER",
    "BGR",
    "COLOURS",
    "FONT",
    "LEVEL_COLOURS",
    "Colour",
    "TextStyle",
    "draw_block",
    "parse_colour",
    "to_drawable",
    "wrap",
]

BGR = tuple[int, int, int]

COLOURS: dict[str, BGR] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (0, 0, 255), "green": (0, 200, 0),
    "blue": (255, 64, 0), "yellow": (0, 255, 255), "cyan": (255, 255, 0), "magenta": (255, 0, 255),
    "orange": (0, 165, 255), "gray": (128, 128, 128), "grey": (128, 128, 128),
}
ALERT_BANNER: BGR = (0, 0, 200)
LEVEL_COLOURS: dict[str, BGR] = {"error": (80, 80, 255), "warning": (0, 200, 255)}
FONT = cv2.FONT_HERSHEY_SIMPLEX
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_colour(value: str) -> BGR:
    """``yellow``, ``#ffcc00`` or ``ffcc00`` as a BGR tuple; :class:`ValueError` otherwise."""
    name = value.strip().lower()
    if name in COLOURS:
        return COLOURS[name]
    match = _HEX.match(name)
    if match:
        rgb = int(match.group(1), 16)
        return (rgb & 0xFF, (rgb >> 8) & 0xFF, rgb >> 16)
    raise ValueError(f"not a colour; use a name ({', '.join(sorted(COLOURS))}) or #rrggbb")


def _check_colour(value: str) -> str:
    parse_colour(value)
    return value


Colour = Annotated[str, AfterValidator(_check_colour)]
"""An option type for colours: the text as given, checked to be a colour name or ``#rrggbb``."""


# Hershey fonts draw ASCII only; map typographic punctuation and accents to their
# nearest ASCII so VLM output ("café — it’s") is not drawn as question marks.
_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                        "\u2026": "...", "\u2022": "*", "\u00a0": " ", "\u00b0": " deg"})


def to_drawable(text: str) -> str:
    """``text`` reduced to what ``cv2.putText`` can draw."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII))
    return decomposed.encode("ascii", "ignore").decode("ascii")


@dataclass(frozen=True)
class TextStyle:
    """Font metrics for one frame size: ``size`` 1.0 makes text about 1/28 of the frame height."""

    scale: float
    thickness: int
    line_height: int
    pad: int

    @classmethod
    def for_frame(cls, height: int, size: float = 1.0) -> TextStyle:
        text_px = max(9, round(height * size / 28))
        scale = cv2.getFontScaleFromHeight(FONT, text_px, 1)
        return cls(scale, max(1, round(text_px / 14)), round(text_px * 1.6), max(3, text_px // 3))

    def width(self, text: str) -> int:
        return int(cv2.getTextSize(text, FONT, self.scale, self.thickness)[0][0])


def wrap(text: str, style: TextStyle, max_width: int, max_lines: int) -> list[str]:
    """Word-wrap ``text`` to ``max_width`` pixels; more than ``max_lines`` lines end in ``...``."""
    lines: list[str] = []
    for paragraph in to_drawable(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if style.width(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # A word wider than the line is cut into pieces that fit.
            while style.width(word) > max_width and len(word) > 1:
                cut = max(1, len(word) * max_width // max(1, style.width(word)))
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        if line:
            lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and style.width(last + "...") > max_width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + "..."]
    return lines


def draw_block(image: np.ndarray, lines: Sequence[str], x: int, y: int, style: TextStyle, *, colour: BGR,
               background: BGR | None, opacity: float, width: int | None = None) -> int:
    """Draw ``lines`` with their top-left corner at (``x``, ``y``) on a translucent box.

    The box is ``width`` wide (default: the widest line). Draws in place on
    ``image``, which must be the caller's own copy. Returns the box's height.
    """
    if not lines:
        return 0
    box_w = width if width is not None else max(style.width(line) for line in lines) + 2 * style.pad
    box_h = len(lines) * style.line_height + style.pad
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + box_w), min(h, y + box_h)
    if background is not None and opacity > 0 and x1 > x0 and y1 > y0:
        roi = image[y0:y1, x0:x1]
        cv2.addWeighted(np.full_like(roi, background), opacity, roi, 1 - opacity, 0, dst=roi)
    for i, line in enumerate(lines):
        baseline = y + (i + 1) * style.line_height - (style.line_height - style.pad) // 3
        cv2.putText(image, line, (x + style.pad, baseline), FONT, style.scale, colour, style.thickness, cv2.LINE_AA)
    return box_h
