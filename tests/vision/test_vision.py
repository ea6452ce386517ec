"""Built-in vision processors: blur, facedetect."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from images import GREY, changed, frame, grey

from framelens import Caption, ConfigError, Detection, Detections, boxes_of
from framelens.plugins.vision.classical import BlurOptions, BlurProcessor, FaceDetectOptions, FaceDetectProcessor
from framelens.testing import run_pipeline


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


