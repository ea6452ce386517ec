"""``testpattern``: a synthetic moving pattern with a frame counter and a clock."""

from __future__ import annotations

import time

import cv2
import numpy as np

from framelens import Context, Field, Options, RegisterFn, Source, SourceInfo

__all__ = ["CODE_BITS", "TestPattern", "TestPatternOptions", "read_code", "register", "render", "write_code"]


class TestPatternOptions(Options):
    width: int = Field(640, ge=16, le=7680, description="Frame width in pixels")
    height: int = Field(480, ge=16, le=4320, description="Frame height in pixels")
    fps: float = Field(30.0, gt=0, le=1000, description="Frames per second the pattern is produced at")


class TestPattern(Source):
    """Colour bars, a moving box, the frame number and the wall clock, paced at ``fps``.

    The frame number is also written as a 16-bit binary strip along the bottom
    edge (black/white cells), so tests and latency benchmarks can read it back
    from a decoded stream without OCR.
    """

    live = True
    reconnect = False

    def __init__(self, locator: str, options: TestPatternOptions) -> None:
        super().__init__(locator)
        self.options = options
        self._n = 0
        self._next = 0.0
        self._bars = self._make_bars(options.width, options.height)

    @staticmethod
    def _make_bars(w: int, h: int) -> np.ndarray:
        colours = [(192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0),
                   (192, 0, 192), (0, 0, 192), (192, 0, 0), (16, 16, 16)]
        bars = np.zeros((h, w, 3), np.uint8)
        for i, c in enumerate(colours):
            bars[:, i * w // 8 : (i + 1) * w // 8] = c
        return bars

    def open(self) -> SourceInfo:
        self._n = 0
        self._next = time.monotonic()
        o = self.options
        return SourceInfo(o.width, o.height, o.fps, None)

    def read(self) -> np.ndarray:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + 1.0 / self.options.fps, time.monotonic() - 1.0)
        img = render(self._bars, self._n)
        self._n += 1
        return img


CODE_BITS = 16


def render(bars: np.ndarray, n: int) -> np.ndarray:
    """One pattern frame for frame number ``n``."""
    img = bars.copy()
    h, w = img.shape[:2]
    box = max(8, h // 8)
    x = (n * 4) % max(1, w - box)
    y = h // 2 - box // 2
    cv2.rectangle(img, (x, y), (x + box, y + box), (255, 255, 255), -1)
    scale = max(0.4, h / 480)
    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    cv2.putText(img, f"frame {n}", (10, int(40 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(2 * scale)), cv2.LINE_AA)
    cv2.putText(img, stamp, (10, int(80 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(2 * scale)), cv2.LINE_AA)
    write_code(img, n)
    return img


def write_code(img: np.ndarray, value: int) -> None:
    """Draw ``value`` as ``CODE_BITS`` black/white cells in the bottom strip of ``img``."""
    h, w = img.shape[:2]
    cell = w // CODE_BITS
    strip = max(8, h // 16)
    for bit in range(CODE_BITS):
        on = (value >> (CODE_BITS - 1 - bit)) & 1
        img[h - strip : h, bit * cell : (bit + 1) * cell] = 255 if on else 0


def read_code(img: np.ndarray) -> int:
    """Read back a value drawn by :func:`write_code` (robust to lossy compression)."""
    h, w = img.shape[:2]
    cell = w // CODE_BITS
    strip = max(8, h // 16)
    value = 0
    for bit in range(CODE_BITS):
        patch = img[h - strip + strip // 4 : h - strip // 4, bit * cell + cell // 4 : (bit + 1) * cell - cell // 4]
        value = (value << 1) | int(patch.mean() > 127)
    return value


def register(register: RegisterFn) -> None:
    def make(locator: str, options: TestPatternOptions, context: Context) -> TestPattern:
        return TestPattern(locator, options)

    register("testpattern", make, options=TestPatternOptions,
             help="synthetic moving pattern with frame counter and clock")
