"""Built-in overlays: captions, fps."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, run_cli
from images import GREY, changed, frame, grey

from framelens import Caption
from framelens.drawing import TextStyle, parse_colour, to_drawable, wrap
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.overlays.captions import CaptionsOptions, CaptionsProcessor
from framelens.plugins.overlays.fps import FpsMeter, FpsOptions, FpsProcessor
from framelens.testing import run_pipeline

# -- captions ----------------------------------------------------------------------------------


def test_caption_is_drawn_at_the_bottom_on_a_copy() -> None:
    image = grey()
    out = CaptionsProcessor(CaptionsOptions()).process(frame(image, ollama=Caption("a cat on a sofa")))
    assert (image == GREY).all()
    diff = changed(image, out.image)
    assert diff[400:].sum() > 500 and diff[:300].sum() == 0
    white = np.asarray((out.image >= 200).all(axis=2))
    assert white[400:].sum() > 100  # white text on the dark box


def test_position_top_and_no_captions() -> None:
    image = grey()
    proc = CaptionsProcessor(CaptionsOptions(position="top"))
    diff = changed(image, proc.process(frame(image, a=Caption("hello"))).image)
    assert diff[:60].sum() > 200 and diff[200:].sum() == 0
    untouched = frame(image, number=3)
    assert proc.process(untouched) is untouched  # nothing to draw: no copy


def test_alert_is_a_red_banner_across_the_top_and_errors_are_red_text() -> None:
    image = grey()
    out = CaptionsProcessor(CaptionsOptions()).process(
        frame(image, alerts=Caption("person at the door", "alert"), ollama=Caption("unreachable", "error")))
    top = out.image[5:15, 20:620]
    red = (top[:, :, 2] > 150) & (top[:, :, 1] < 60) & (top[:, :, 0] < 60)
    assert red.mean() > 0.5  # banner spans the width
    text_on_banner = (out.image[:40] >= 200).all(axis=2)
    assert text_on_banner.sum() > 50  # white text on it
    bottom = out.image[420:]
    reddish = (bottom[:, :, 2] > 200) & (bottom[:, :, 1] < 140)
    assert reddish.sum() > 30


def test_has_caption_results_and_key_filter() -> None:
    class Finding:
        def caption(self) -> Caption | None:
            return Caption("from a plugin")

    image = grey()
    drawn = CaptionsProcessor(CaptionsOptions()).process(frame(image, mine=Finding()))
    assert changed(image, drawn.image).sum() > 100
    filtered = frame(image, mine=Finding())
    assert CaptionsProcessor(CaptionsOptions(keys=["other"])).process(filtered) is filtered


def test_text_scales_with_the_frame_and_wraps_to_max_lines() -> None:
    heights = []
    for w, h in ((320, 240), (1920, 1080)):
        image = grey(w, h)
        diff = changed(image, CaptionsProcessor(CaptionsOptions()).process(frame(image, c=Caption("Hello"))).image)
        rows = np.flatnonzero(diff.any(axis=1))
        heights.append((rows[-1] - rows[0]) / h)
    assert heights[1] == pytest.approx(heights[0], rel=0.35)
    style = TextStyle.for_frame(480)
    lines = wrap("word " * 200, style, 600, 3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(style.width(line) <= 600 for line in lines)
    assert wrap("x" * 500, style, 300, 10)[0] and all(style.width(ln) <= 300 for ln in wrap("x" * 500, style, 300, 10))


def test_text_is_made_drawable_and_colours_parse() -> None:
    assert to_drawable("Café — “ok” it’s…") == 'Cafe - "ok" it\'s...'
    assert parse_colour("red") == (0, 0, 255) and parse_colour("#102030") == (0x30, 0x20, 0x10)
    with pytest.raises(ValueError):
        parse_colour("purple")
    result = run_cli(["run", "-s", "testpattern", "-p", "captions", "-c", "captions-color=purple", "-o", "none"])
    assert result.returncode == 2 and "captions-color" in result.stderr and "#rrggbb" in result.stderr


# -- fps ---------------------------------------------------------------------------------------


def test_fps_meter_is_a_moving_average() -> None:
    meter = FpsMeter(window=1.0)
    assert meter.tick(0.0) is None
    rates = [meter.tick(i / 20) for i in range(1, 41)]  # 20 fps for 2 s
    assert rates[-1] == pytest.approx(20)
    rates = [meter.tick(2.0 + i / 5) for i in range(1, 11)]  # then 5 fps: the old frames age out
    assert rates[-1] == pytest.approx(5)


def test_fps_draws_in_its_corner() -> None:
    proc = FpsProcessor(FpsOptions())
    image = grey()
    first = frame(image)
    assert proc.process(first) is first  # one frame is no rate yet
    time.sleep(0.02)
    out = proc.process(frame(image))
    assert isinstance(out.results["fps"], float) and out.results["fps"] > 0
    diff = changed(image, out.image)
    assert diff[:60, 480:].sum() > 100 and diff[:, :400].sum() == 0 and diff[100:].sum() == 0


def test_fps_in_a_pipeline(tmp_path: Path) -> None:
    _, out, _ = run_pipeline(["-s", "testpattern", "-c", "testpattern-fps=60", "--max-frames", "10", "-p", "fps",
                              "-c", "fps-position=bottom-left", "-o", "none"])
    assert all("fps" in f.results for f in out.frames[1:])


def test_docs_list_every_processor_option() -> None:
    page = (ROOT / "docs" / "processors.md").read_text()
    registry = get_plugin_manager().registry
    for name in ("blur", "facedetect", "captions", "fps"):
        assert f"## {name}" in page
        for field in registry.get("processor", name).options.model_fields:
            key = f"`{name}-{field.replace('_', '-')}`"
            assert key in page, f"docs/processors.md does not document {key}"

