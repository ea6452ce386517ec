"""Per-frame cost of the drawing overlays at 720p: draw on the box only vs the old full redraw.

- before: what ``captions`` / ``fps`` did until issue 15, side by side in this
  script: copy the frame, lay out and rasterise the text with
  ``framelens.drawing.draw_block`` on every frame;
- after: the ``captions`` / ``fps`` processors as they are (the text
  rasterised once per text, blended onto its box; one frame copy);
- copy: the frame copy alone, the floor both pay.

Frames rotate over 30 distinct 1280x720 images, as a camera delivers new
memory every frame (a single hot frame would flatter every variant). Median of
``--repeats`` runs of ``--frames`` frames each.

    .venv/bin/python bench/overlays_draw.py [--frames 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from framelens import Caption, Frame, Results
from framelens.drawing import TextStyle, draw_block, parse_colour, wrap
from framelens.plugins.overlays.captions import CaptionsOptions, CaptionsProcessor
from framelens.plugins.overlays.fps import FpsOptions, FpsProcessor

TEXT = "A person in a blue jacket is standing at the front door holding a parcel."


def old_captions(image: np.ndarray) -> np.ndarray:
    """The pre-issue-15 captions path for one bottom caption."""
    out = image.copy()
    h, w = out.shape[:2]
    style = TextStyle.for_frame(h, 1.0)
    margin = max(2, h // 60)
    lines = wrap(TEXT, style, w - 2 * margin - 2 * style.pad, 4)
    height = len(lines) * style.line_height + style.pad
    draw_block(out, lines, margin, h - margin - height, style, colour=parse_colour("white"),
               background=parse_colour("black"), opacity=0.6)
    return out


def old_fps(image: np.ndarray) -> np.ndarray:
    """The pre-issue-15 fps path."""
    out = image.copy()
    h, w = out.shape[:2]
    style = TextStyle.for_frame(h, 1.0)
    margin = max(2, h // 60)
    text = "29.9 fps"
    box_w = style.width(text) + 2 * style.pad
    draw_block(out, [text], w - margin - box_w, margin, style, colour=parse_colour("yellow"),
               background=parse_colour("black"), opacity=0.6)
    return out


def per_frame_ms(fn: Callable[[np.ndarray], object], frames: list[np.ndarray], n: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(frames[i % len(frames)])
        runs.append((time.perf_counter() - t0) / n * 1000)
    return round(statistics.median(runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(30)]
    results = Results({"describe": Caption(TEXT)})
    captions = CaptionsProcessor(CaptionsOptions())
    fps = FpsProcessor(FpsOptions())
    fps.meter.tick = lambda now=None: 29.9  # type: ignore[method-assign]  # a steady reading, as at 30 fps
    report = {"cpus": os.cpu_count(), "frame": "1280x720", "ms_per_frame": {
        "copy": per_frame_ms(lambda im: im.copy(), frames, args.frames, args.repeats),
        "captions_before": per_frame_ms(old_captions, frames, args.frames, args.repeats),
        "captions_after": per_frame_ms(lambda im: captions.process(Frame(im, 0, 0.0, results=results)), frames,
                                       args.frames, args.repeats),
        "fps_before": per_frame_ms(old_fps, frames, args.frames, args.repeats),
        "fps_after": per_frame_ms(lambda im: fps.process(Frame(im, 0, 0.0)), frames, args.frames, args.repeats),
    }}
    # The old path must draw the same picture, or the comparison is meaningless.
    same = np.abs(old_captions(frames[0]).astype(int)
                  - captions.process(Frame(frames[0], 0, 0.0, results=results)).image.astype(int))
    report["max_pixel_difference_captions"] = int(same.max())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
