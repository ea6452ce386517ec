"""Text boxes rendered once and blended onto each frame's region only.

``framelens.drawing.draw_block`` lays out and rasterises the text on every
call: anti-aliased ``putText`` is most of what an overlay costs per frame, and
the text rarely changes between frames (a caption stays for seconds, an fps
reading repeats). A :class:`TextSprite` rasterises a block once: the glyphs'
coverage, kept only where it is non-zero (about a tenth of a caption box).
Drawing it is then the translucent box (one ``cv2.addWeighted`` over the box)
and the glyph pixels blended with their coverage, the same two steps
``draw_block`` takes. Pixels outside the box are never read or written.
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
        self.opacity = opacity if background is not None else 0.0
        self.box = np.full((self.height, self.width, 3), background or (0, 0, 0), np.uint8)
        self.ys, self.xs = np.nonzero(coverage)
        a = coverage[self.ys, self.xs].astype(np.uint16)[:, None]
        self.keep = 255 - a
        self.ink = np.asarray(colour, np.uint16)[None, :] * a + 127  # + 127: round, not truncate, below
        self._placed: tuple[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def _glyphs(self, x: int, y: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The glyph pixels' flat indices in a ``w`` x ``h`` frame at (x, y), clipped; cached per place."""
        if self._placed is not None and self._placed[0] == (x, y, w, h):
            return self._placed[1]
        ys, xs = self.ys + y, self.xs + x
        inside = (ys >= 0) & (xs >= 0) & (ys < h) & (xs < w)
        glyphs = ((ys[inside] * w + xs[inside]).astype(np.intp), self.keep[inside], self.ink[inside])
        self._placed = ((x, y, w, h), glyphs)
        return glyphs

    def draw(self, image: np.ndarray, x: int, y: int) -> int:
        """Blend onto ``image`` (the caller's own copy) with the top-left corner at (x, y); returns the height."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + self.width), min(h, y + self.height)
        if x1 <= x0 or y1 <= y0:
            return self.height
        roi = image[y0:y1, x0:x1]
        if self.opacity > 0:
            box = self.box[: y1 - y0, : x1 - x0]
            cv2.addWeighted(box, self.opacity, roi, 1 - self.opacity, 0, dst=roi)
        if not image.flags.c_contiguous:
            # A view (a crop): reshape would copy, so blend through 2-D indices instead.
            ys, xs = self.ys + y, self.xs + x
            inside = (ys >= 0) & (xs >= 0) & (ys < h) & (xs < w)
            ys, xs = ys[inside], xs[inside]
            image[ys, xs] = ((image[ys, xs] * self.keep[inside] + self.ink[inside]) // 255).astype(np.uint8)
            return self.height
        flat, keep, ink = self._glyphs(x, y, w, h)
        pixels = image.reshape(-1, 3)
        # Flat indices: numpy's take/put on one axis is about twice as fast as 2-D fancy indexing.
        pixels[flat] = ((pixels.take(flat, axis=0) * keep + ink) // 255).astype(np.uint8)
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
