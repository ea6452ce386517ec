"""Built-in processors: blur, facedetect, captions, fps."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, run_cli

from framelens import Caption, ConfigError, Frame, Results
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.captions import CaptionsOptions, CaptionsProcessor, TextStyle, parse_colour, to_drawable, wrap
from framelens.plugins.classical import (
    BlurOptions,
    BlurProcessor,
    Detection,
    Detections,
    FaceDetectOptions,
    FaceDetectProcessor,
    boxes_of,
)
from framelens.plugins.fps import FpsMeter, FpsOptions, FpsProcessor
from framelens.testing import run_pipeline

GREY = 90


def grey(w: int = 640, h: int = 480) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def frame(image: np.ndarray, **results: object) -> Frame:
    return Frame(image, 0, time.time(), results=Results(results))


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of pixels that differ."""
    return np.asarray(np.any(a != b, axis=2))


def draw_face(size: int = 100, bg: int = GREY) -> np.ndarray:
    """A drawn frontal face (hair, skin, brows, eyes, nose, mouth) that Haar cascades accept."""
    img = np.full((size * 2, size * 2, 3), bg, np.uint8)
    c, s = size, size / 240

    def ell(dx: float, dy: float, ax: float, ay: float, colour: tuple[int, int, int]) -> None:
        cv2.ellipse(img, (c + int(dx * s), c + int(dy * s)), (int(ax * s), int(ay * s)), 0, 0, 360, colour, -1)

    ell(0, -20, 100, 125, (40, 40, 40))
    ell(0, 0, 85, 110, (150, 170, 200))
    for dx in (-35, 35):
        ell(dx, -38, 24, 7, (50, 50, 60))
        ell(dx, -18, 18, 9, (30, 30, 30))
    ell(0, 20, 10, 25, (175, 195, 225))
    ell(0, 62, 32, 10, (60, 60, 120))
    return cv2.GaussianBlur(img, (0, 0), 3 * s)


def face_scene() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 640x480 frame with one face; and the face's (x, y, w, h)."""
    image = grey()
    image[140:340, 300:500] = draw_face(100)
    return image, (300 + 100 - 43, 140 + 100 - 46, 86, 100)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


# -- blur --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["box", "gaussian"])
def test_blur_smooths_the_frame_without_touching_the_input(kind: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = noise.copy()
    out = BlurProcessor(BlurOptions(kind=kind, ksize=9)).process(frame(noise))
    assert np.array_equal(noise, before)
    assert out.image.shape == noise.shape and out.image.std() < noise.std() / 2


def test_blur_regions_blurs_only_the_detected_boxes() -> None:
    noise = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = Detections((Detection(10, 20, 40, 30),), 0)
    out = BlurProcessor(BlurOptions(regions="facedetect", ksize=7)).process(frame(noise, facedetect=boxes))
    diff = changed(noise, out.image)
    assert diff[20:50, 10:50].mean() > 0.9 and diff.sum() == diff[20:50, 10:50].sum()
    untouched = BlurProcessor(BlurOptions(regions="facedetect")).process(frame(noise))
    assert untouched.image is noise  # no detections yet: nothing to blur


def test_boxes_accept_detections_objects_and_tuples() -> None:
    assert boxes_of([Detection(1, 2, 3, 4), (5, 6, 7, 8)]) == [(1, 2, 3, 4), (5, 6, 7, 8)]
    with pytest.raises(TypeError):
        boxes_of(42)


def test_gaussian_blur_needs_an_odd_kernel() -> None:
    with pytest.raises(ConfigError, match=r"blur-ksize.*must be odd, e.g. 25"):
        run_pipeline(["-s", "testpattern", "-p", "blur", "-c", "blur-kind=gaussian", "-c", "blur-ksize=24"])


# -- facedetect --------------------------------------------------------------------------------


def test_facedetect_finds_the_drawn_face_and_boxes_it() -> None:
    image, truth = face_scene()
    before = image.copy()
    proc = FaceDetectProcessor(FaceDetectOptions(sync=True), context=None)  # type: ignore[arg-type]
    proc.start()
    try:
        out = proc.process(frame(image))
    finally:
        proc.close()
    assert np.array_equal(image, before)
    found = out.results["facedetect"]
    assert isinstance(found, Detections) and len(found) == 1
    assert iou(found[0].box, truth) > 0.4, (found[0].box, truth)
    x, y, w, h = found[0].box
    green = (out.image[:, :, 1] > 150) & (out.image[:, :, 0] < 60) & (out.image[:, :, 2] < 60)
    assert green[y, x + w // 2] or green[y + 1, x + w // 2]  # the box's top edge is drawn
    assert green.sum() == green[max(0, y - 3):y + h + 4, max(0, x - 3):x + w + 4].sum()  # and nothing else


def test_facedetect_finds_nothing_in_noise_or_flat_frames() -> None:
    proc = FaceDetectProcessor(FaceDetectOptions(sync=True), context=None)  # type: ignore[arg-type]
    proc.start()
    rng = np.random.default_rng(3)
    for image in (rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), grey(320, 240)):
        out = proc.process(frame(image))
        assert len(out.results["facedetect"]) == 0 and out.image is image


def test_facedetect_in_the_background_publishes_counts_for_captions(tmp_path: Path) -> None:
    image, _ = face_scene()
    cv2.imwrite(str(tmp_path / "face.png"), image)
    _, out, runtime = run_pipeline(["-s", str(tmp_path / "face.png"), "--loop", "--realtime", "--fps", "30",
                                    "--max-frames", "30", "-p", "facedetect", "-c", "facedetect-count=true",
                                    "-p", "captions", "-o", "none"])
    with_results = [f for f in out.frames if "facedetect" in f.results]
    assert with_results and len(with_results[-1].results["facedetect"]) == 1
    assert with_results[-1].results["facedetect"].caption() == Caption("1 face")
    assert out.frames[-1].results["facedetect"].frame_index < out.frames[-1].index  # found on an earlier frame
    assert runtime.stages[0].processor.stats()["calls"] >= 1


def test_unknown_cascade_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"no cascade 'nope'.*haarcascade_frontalface_default.xml"):
        run_pipeline(["-s", "testpattern", "-p", "facedetect", "-c", "facedetect-cascade=nope"])


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
