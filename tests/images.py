"""Small synthetic frames for processor tests."""

from __future__ import annotations

import time

import numpy as np

from framelens import Frame, Results

GREY = 90


def grey(w: int = 640, h: int = 480) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def frame(image: np.ndarray, **results: object) -> Frame:
    return Frame(image, 0, time.time(), results=Results(results))


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of pixels that differ."""
    return np.asarray(np.any(a != b, axis=2))
