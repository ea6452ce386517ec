"""The camera source, through a fake V4L2 capture: this machine has no /dev/video* devices."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from framelens import ConfigError, SourceError
from framelens.plugins.sources.cameras import CameraOptions, CameraSource
from framelens.testing import run_pipeline


class FakeCapture:
    """Stands in for cv2.VideoCapture on a V4L2 device: records settings, yields frames."""

    instances: list[FakeCapture] = []
    opened = True
    delivers = True

    def __init__(self, target: Any, api: int) -> None:
        self.target, self.api = target, api
        self.calls: list[tuple[int, float]] = []
        self.props = {cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0, cv2.CAP_PROP_FPS: 30.0}
        self.released = False
        self.reads = 0
        FakeCapture.instances.append(self)

    def isOpened(self) -> bool:  # OpenCV's spelling
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.calls.append((prop, value))
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FPS):
            self.props[prop] = value
        return True  # like V4L2, ignores the height: the driver picks what it supports

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.delivers:
            return False, None
        self.reads += 1
        w, h = int(self.props[cv2.CAP_PROP_FRAME_WIDTH]), int(self.props[cv2.CAP_PROP_FRAME_HEIGHT])
        return True, np.full((h, w, 3), self.reads % 256, np.uint8)

    def release(self) -> None:
        self.released = True


@pytest.fixture
def fake_v4l2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    FakeCapture.instances = []
    FakeCapture.opened = True
    FakeCapture.delivers = True
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    device = tmp_path / "video7"
    device.write_bytes(b"")  # a stand-in device node: the source checks it exists first
    return str(device)


def test_camera_requests_format_then_size_then_rate(fake_v4l2: str, caplog: pytest.LogCaptureFixture) -> None:
    source = CameraSource(f"v4l2://{fake_v4l2}", CameraOptions(width=320, height=240, fps=15, format="MJPG"))
    with caplog.at_level(logging.WARNING):
        info = source.open()
    cap = FakeCapture.instances[-1]
    assert cap.target == fake_v4l2 and cap.api == cv2.CAP_V4L2
    props = [p for p, _ in cap.calls]
    assert props[:4] == [cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS]
    assert dict(cap.calls)[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"MJPG")
    assert dict(cap.calls)[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert (info.width, info.height, info.fps) == (320, 480, 15)
    assert any("asked for height 240, the camera gives 480" in r.getMessage() for r in caplog.records)
    source.close()
    assert cap.released


def test_run_flags_reach_the_camera_and_frames_flow(fake_v4l2: str) -> None:
    report, out, _ = run_pipeline(["-s", f"v4l2://{fake_v4l2}", "--width", "160", "--fps", "50",
                                   "--max-frames", "5", "-o", "none"])
    assert report["frames"] == 5
    cap = FakeCapture.instances[-1]
    assert (cv2.CAP_PROP_FRAME_WIDTH, 160) in cap.calls and (cv2.CAP_PROP_FPS, 50) in cap.calls
    assert out.frames[0].image.shape == (480, 160, 3)
    assert cap.released


def test_camera_that_will_not_open_says_why(fake_v4l2: str) -> None:
    FakeCapture.opened = False
    with pytest.raises(SourceError, match=r"cannot be opened as a camera \(busy"):
        CameraSource(fake_v4l2, CameraOptions()).open()


def test_camera_that_opens_but_delivers_nothing_fails_at_open(fake_v4l2: str) -> None:
    FakeCapture.delivers = False
    with pytest.raises(SourceError, match="opened, but no frame could be read"):
        CameraSource(fake_v4l2, CameraOptions()).open()
    assert FakeCapture.instances[-1].released


def test_close_during_a_blocked_read_defers_the_release(fake_v4l2: str) -> None:
    source = CameraSource(fake_v4l2, CameraOptions())
    source.open()
    assert source.read() is not None  # the frame open() read to check the camera delivers
    cap = FakeCapture.instances[-1]
    entered, proceed = threading.Event(), threading.Event()
    original = cap.read

    def slow_read() -> tuple[bool, np.ndarray | None]:
        entered.set()
        proceed.wait(5)
        return original()

    cap.read = slow_read  # type: ignore[method-assign]
    reader = threading.Thread(target=source.read)
    reader.start()
    assert entered.wait(5)
    source.close()
    assert not cap.released  # releasing under a running read would crash OpenCV
    proceed.set()
    reader.join(5)
    assert cap.released


def test_bad_camera_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="camera-format.*4 ASCII"):
        run_pipeline(["-s", "0", "-c", "camera-format=MJPEG", "-o", "none"])
