"""Text boxes rendered once and blended onto each frame's region only.

``framelens.drawing.draw_block`` lays out and rasterises the text on every
call: anti-aliased ``putText`` is most of what an overlay costs per frame, and
the text rarely changes between frames (a caption stays for seconds, an fps
reading repeats). A :class:`TextSprite` rasterises a block once, as a colour
patch ``P`` and per-pixel weights, so that drawing it is one
``cv2.blendLinear`` over the box::

    out = frame * w1 + P * w2        (w1 + w2 = 1)

which is exactly the translucent background followed by anti-aliased text:
``w1 = (1 - opacity) * (1 - a)`` with ``a`` the glyph coverage. Pixels outside
the box are never read or written.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

import cv2
import numpy as np

from framelens.drawing import BGR, FONT, TextStyle

__all__ = ["SpriteCache", "TextSprite"]


class TextSprite:
    """One text block (lines on an optional translucent box), ready to blend at any position."""

    def __init__(self, lines: Sequence[str], style: TextStyle, *, colour: BGR, background: BGR | None,
                 opacity: float, width: int | None = None) -> None:
        # The geometry is draw_block's, so sprites and direct drawing look the same.
        self.width = width if width is not None else max(style.width(line) for line in lines) + 2 * style.pad
        self.height = len(lines) * style.line_height + style.pad
        coverage = np.zeros((self.height, self.width), np.uint8)
        for i, line in enumerate(lines):
            baseline = (i + 1) * style.line_height - (style.line_height - style.pad) // 3
            cv2.putText(coverage, line, (style.pad, baseline), FONT, style.scale, 255, style.thickness, cv2.LINE_AA)
        a = coverage.astype(np.float32) / 255.0
        box = opacity if background is not None else 0.0
        self.w1 = ((1.0 - box) * (1.0 - a)).astype(np.float32)
        self.w2 = (1.0 - self.w1).astype(np.float32)
        bg = np.asarray(background if background is not None else (0, 0, 0), np.float32)
        fg = np.asarray(colour, np.float32)
        weight = np.maximum(self.w2, 1e-6)[..., None]
        patch = (bg * (box * (1.0 - a))[..., None] + fg * a[..., None]) / weight
        self.patch = np.clip(np.rint(patch), 0, 255).astype(np.uint8)

    def draw(self, image: np.ndarray, x: int, y: int) -> int:
        """Blend onto ``image`` (the caller's own copy) with the top-left corner at (x, y); returns the height."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + self.width), min(h, y + self.height)
        if x1 <= x0 or y1 <= y0:
            return self.height
        sy, sx = y0 - y, x0 - x
        rows, cols = slice(sy, sy + y1 - y0), slice(sx, sx + x1 - x0)
        roi = image[y0:y1, x0:x1]
        cv2.blendLinear(roi, self.patch[rows, cols], self.w1[rows, cols], self.w2[rows, cols], dst=roi)
        return self.height


class SpriteCache:
    """The most recently used sprites by key; a changed caption makes a new one, old ones age out."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, TextSprite] = OrderedDict()
        self.misses = 0

    def peek(self, key: Hashable) -> TextSprite | None:
        """The sprite for ``key`` if there is one (marked as recently used)."""
        sprite = self._items.get(key)
        if sprite is not None:
            self._items.move_to_end(key)
        return sprite

    def get(self, key: Hashable, lines: Sequence[str], style: TextStyle, *, colour: BGR, background: BGR | None,
            opacity: float, width: int | None = None) -> TextSprite:
        sprite = self._items.get(key)
        if sprite is not None:
            self._items.move_to_end(key)
            return sprite
        self.misses += 1
        sprite = TextSprite(lines, style, colour=colour, background=background, opacity=opacity, width=width)
        self._items[key] = sprite
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return sprite
