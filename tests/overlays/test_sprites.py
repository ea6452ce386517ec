"""Overlays draw on their boxes only, from text rendered once, and look like draw_block."""

from __future__ import annotations

import numpy as np
import pytest

from framelens import Caption, Frame, Results
from framelens.drawing import TextStyle, draw_block
from framelens.plugins.overlays.captions import CaptionsOptions, CaptionsProcessor
from framelens.plugins.overlays.fps import FpsOptions, FpsProcessor
from framelens.plugins.overlays.sprite import TextSprite


def noise(h: int = 720, w: int = 1280, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("opacity", [0.0, 0.6, 1.0])
def test_a_sprite_looks_like_draw_block(opacity: float) -> None:
    image = noise()
    style = TextStyle.for_frame(720)
    lines = ["A person is standing at the door", "holding a parcel"]
    expected = image.copy()
    draw_block(expected, lines, 20, 500, style, colour=(255, 255, 255), background=(0, 0, 0), opacity=opacity)
    got = image.copy()
    sprite = TextSprite(lines, style, colour=(255, 255, 255), background=(0, 0, 0), opacity=opacity)
    assert sprite.draw(got, 20, 500) == len(lines) * style.line_height + style.pad
    diff = np.abs(expected.astype(int) - got.astype(int))
    # Same box, same glyphs: only rounding differs, by a few levels on a few anti-aliased edge pixels.
    assert diff.max() <= 6 and (diff > 2).mean() < 0.001
    changed = np.argwhere((got != image).any(axis=2))
    assert changed[:, 0].min() >= 500 and changed[:, 1].min() >= 20
    assert changed[:, 0].max() < 500 + sprite.height and changed[:, 1].max() < 20 + sprite.width


def test_a_sprite_is_clipped_at_the_frame_edges() -> None:
    image = noise(240, 320)
    sprite = TextSprite(["clipped text here"], TextStyle.for_frame(240), colour=(0, 255, 255), background=(0, 0, 0),
                        opacity=0.8)
    for x, y in ((-30, -10), (300, 230), (1000, 1000)):
        out = image.copy()
        sprite.draw(out, x, y)
        changed = np.argwhere((out != image).any(axis=2))
        if x >= 320:
            assert changed.size == 0
        else:
            assert changed.size and changed[:, 1].max() < max(0, x) + sprite.width


def test_a_sprite_draws_on_a_view_too() -> None:
    base = noise(240, 640)
    style = TextStyle.for_frame(240)
    sprite = TextSprite(["on a crop"], style, colour=(255, 255, 255), background=(0, 0, 0), opacity=0.5)
    whole, cropped = base.copy(), base.copy()
    sprite.draw(whole, 330, 20)
    sprite.draw(cropped[:, 320:], 10, 20)  # the right half: not contiguous
    assert (whole == cropped).all() and (whole != base).any()


def test_captions_render_each_text_once_and_touch_only_their_box() -> None:
    proc = CaptionsProcessor(CaptionsOptions())
    results = Results({"describe": Caption("A cat sits on the sofa.")})
    outs = []
    for i in range(5):
        image = noise(seed=i)
        out = proc.process(Frame(image, i, 0.0, results=results))
        assert (image == noise(seed=i)).all()  # the input image is never drawn on
        outs.append((image, out.image))
    assert proc.sprites.misses == 1  # rasterised once for five frames
    image, drawn = outs[0]
    rows = np.argwhere((drawn != image).any(axis=2))[:, 0]
    assert rows.min() > 600  # a bottom caption on a 720p frame: the rows above are the input's, untouched
    proc.process(Frame(noise(), 5, 0.0, results=Results({"describe": Caption("A dog.")})))
    assert proc.sprites.misses == 2


def test_fps_reuses_its_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = FpsProcessor(FpsOptions(position="bottom-left"))
    monkeypatch.setattr(proc.meter, "tick", lambda now=None: 25.0)  # a steady reading
    image = noise(480, 640)
    for i in range(3):
        out = proc.process(Frame(image, i, 0.0))
    assert out.results["fps"] == 25.0 and proc.sprites.misses == 1
    changed = np.argwhere((out.image != image).any(axis=2))
    assert changed[:, 0].min() > 400 and changed[:, 1].max() < 200
