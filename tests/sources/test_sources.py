"""Sources read through OpenCV: files, images, folders, globs, HTTP streams, cameras (faked), errors."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers import ROOT, free_port, make_video, run_cli, tar_pit

from framelens import ConfigError, Event, EventBus, LiveCapture, SourceError
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.sources.cameras import (
    CsiOptions,
    NetworkStreamSource,
    StreamOptions,
    csi_pipeline,
)
from framelens.plugins.sources.files import natural_key
from framelens.plugins.sources.testpattern import read_code
from framelens.testing import run_pipeline


def brightness(frame: Any) -> float:
    return float(frame.image[:20, :20].mean())


def write_images(folder: Path, names: list[str], size: tuple[int, int] = (80, 60)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.full((size[1], size[0], 3), 10 * (i + 1), np.uint8))


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def start_mjpeg_server(port: int) -> subprocess.Popen[bytes]:
    """framelens itself, serving a 30 fps test pattern as MJPEG, in another process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "framelens", "run", "-s", "testpattern", "-c", "testpattern-width=320",
         "-c", "testpattern-height=240", "-o", f"http://127.0.0.1:{port}/", "--max-frames", "100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except AssertionError:
        proc.kill()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def mjpeg_server() -> Iterator[int]:
    port = free_port()
    proc = start_mjpeg_server(port)
    yield port
    stop(proc)


# -- resolution ------------------------------------------------------------------------------


@pytest.mark.parametrize(("locator", "name"), [
    ("0", "camera"), ("2", "camera"), ("camera", "camera"), ("/dev/video0", "camera"),
    ("/dev/v4l/by-id/usb-cam-video-index0", "camera"), ("v4l2:///dev/video0", "camera"),
    ("csi://0", "csi"), ("clip.mp4", "video"), ("dir/CLIP.MKV", "video"), ("photo.jpg", "image"),
    ("shot.PNG", "image"), ("frames/*.png", "images"), ("frames/img_??.jpg", "images"),
    ("http://cam.local/video.mjpg", "stream"), ("https://cam.local/live", "stream"),
    ("videotestsrc ! videoconvert ! appsink", "gstreamer"),
])
def test_locators_resolve_to_the_right_source(locator: str, name: str) -> None:
    assert get_plugin_manager().registry.resolve("source", locator).name == name


def test_folder_resolves_to_images_and_rtsp_is_not_claimed(tmp_path: Path) -> None:
    registry = get_plugin_manager().registry
    assert registry.resolve("source", str(tmp_path)).name == "images"
    try:
        spec = registry.resolve("source", "rtsp://cam.local/stream")
    except ConfigError:
        return  # no RTSP plugin loaded: fine, as long as these sources do not take it
    assert spec.plugin != "opencv_sources"


def test_csi_pipeline_carries_the_requested_settings() -> None:
    pipeline = csi_pipeline(1, CsiOptions(width=1920, height=1080, fps=29.97, flip_method=2))
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,")
    assert "framerate=2997/100" in pipeline and "flip-method=2" in pipeline and pipeline.endswith("sync=false")
    with pytest.raises(ConfigError, match=r"-s csi://front: expected csi://N"):
        run_pipeline(["-s", "csi://front", "-o", "none"])


def test_natural_order() -> None:
    names = ["f10.png", "f2.png", "F1.png", "f100.png", "f9.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f2.png", "f9.png", "f10.png", "f100.png"]


# -- files -----------------------------------------------------------------------------------


def test_video_file_plays_every_frame_in_order(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=30, size=(160, 120))
    report, out, _ = run_pipeline(["-s", str(clip), "-o", "none"])
    assert report["frames"] == 30 and len(out.frames) == 30
    assert {f.image.shape for f in out.frames} == {(120, 160, 3)}
    assert [f.index for f in out.frames] == list(range(30))
    means = [brightness(f) for f in out.frames]
    assert all(abs(m - 8 * i) < 6 for i, m in enumerate(means)), means


def test_video_file_reports_its_info_and_loops(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.avi", frames=12, size=(96, 64), fps=12.5, fourcc="MJPG")
    events = tmp_path / "events.jsonl"
    report, out, _ = run_pipeline(["-s", str(clip), "--loop", "--max-frames", "30", "-o", "none",
                                   "--events", str(events)])
    assert report["frames"] == 30
    means = [brightness(f) for f in out.frames]
    assert abs(means[12] - means[0]) < 6 and abs(means[29] - means[5]) < 6  # wrapped around
    connected = [json.loads(line) for line in events.read_text().splitlines()]
    info = next(e["payload"] for e in connected if e["type"] == "source")
    assert (info["width"], info["height"], info["fps"]) == (96, 64, 12.5)


def test_single_image_is_one_frame_and_loops(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((50, 70, 3), 77, np.uint8))
    report, out, _ = run_pipeline(["-s", str(photo), "-o", "none"])
    assert report["frames"] == 1 and out.frames[0].image.shape == (50, 70, 3)
    report, out, _ = run_pipeline(["-s", str(photo), "--loop", "--max-frames", "4", "-o", "none"])
    assert report["frames"] == 4 and all(brightness(f) == 77 for f in out.frames)


def test_grey_and_alpha_images_become_bgr(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a1.png"), np.full((10, 12), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "a2.png"), np.full((10, 12, 4), 100, np.uint8))
    _, out, _ = run_pipeline(["-s", str(tmp_path / "a*.png"), "-o", "none"])
    assert [f.image.shape for f in out.frames] == [(10, 12, 3)] * 2


def test_folder_plays_images_in_natural_order_and_ignores_other_files(tmp_path: Path) -> None:
    names = ["f1.png", "f2.jpg", "f3.png", "f10.png", "f11.bmp"]
    write_images(tmp_path / "frames", names)
    (tmp_path / "frames" / "notes.txt").write_text("not an image")
    report, out, _ = run_pipeline(["-s", str(tmp_path / "frames"), "-o", "none"])
    assert report["frames"] == 5
    assert [round(brightness(f) / 10) for f in out.frames] == [1, 2, 3, 4, 5]


def test_glob_selects_matching_files(tmp_path: Path) -> None:
    write_images(tmp_path, ["a1.png", "a2.png", "b1.png", "a10.png"])
    _, out, _ = run_pipeline(["-s", str(tmp_path / "a*.png"), "-o", "none"])
    assert [round(brightness(f) / 10) for f in out.frames] == [1, 2, 4]


def test_undecodable_file_in_a_glob_is_skipped_with_a_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, ["s1.png", "s3.png"])
    (tmp_path / "s2.png").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        report, _, _ = run_pipeline(["-s", str(tmp_path / "s*.png"), "-o", "none"])
    assert report["frames"] == 2
    assert any("s2.png" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)


def test_images_honour_requested_fps_for_realtime(tmp_path: Path) -> None:
    write_images(tmp_path, ["p1.png"])
    events = tmp_path / "ev.jsonl"
    run_pipeline(["-s", str(tmp_path / "p1.png"), "--fps", "7.5", "-o", "none", "--events", str(events)])
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert next(e for e in lines if e["type"] == "source")["payload"]["fps"] == 7.5


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "locator", "expected"), [
    (None, "missing.mp4", "video file {d}/missing.mp4: no such file"),
    ("text", "fake.mp4", "FFmpeg cannot read it"),
    ("text", "fake.jpg", "not an image OpenCV can decode"),
    (None, "nothing/*.png", "no files match"),
    ("dir", "empty", "no image files"),
    (None, "7", "camera 7: /dev/video7 does not exist"),
    (None, "/dev/video9", "camera /dev/video9: does not exist"),
    (None, "csi://0", "GStreamer"),
    (None, "http://user:secret@127.0.0.1:{closed}/x.mjpg", "cannot connect (connection refused)"),
])
def test_unopenable_sources_fail_fast_with_a_clear_error(tmp_path: Path, make: str | None, locator: str,
                                                         expected: str) -> None:
    target = tmp_path / locator
    if make == "text":
        target.write_text("this is not media")
    elif make == "dir":
        target.mkdir()
    closed = free_port()
    loc = locator.format(closed=closed)
    loc = loc if loc[0].isdigit() or "://" in loc or loc.startswith("/dev") else str(tmp_path / loc)
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        run_pipeline(["-s", loc, "-o", "none"])
    message = str(info.value)
    assert expected.format(d=tmp_path) in message
    assert "secret" not in message
    assert time.monotonic() - started < 15  # fails at once, never waits on a reconnect loop


def test_cli_exit_status_and_message_for_a_bad_source(tmp_path: Path) -> None:
    result = run_cli(["run", "-s", str(tmp_path / "nope.mkv"), "-o", "none"])
    assert result.returncode == 1
    assert "framelens: error: video file" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(["run", "-s", "csi://0", "-o", "none"])
    assert result.returncode == 1 and "cv2.getBuildInformation()" in result.stderr


def test_stream_source_explains_http_errors(mjpeg_server: int) -> None:
    with pytest.raises(SourceError, match=r"HTTP 404 Not Found"):
        run_pipeline(["-s", f"http://127.0.0.1:{mjpeg_server}/no-such-stream.mjpg", "-o", "none"])
    with pytest.raises(SourceError, match=r"answered with text/html.*cannot read as video"):
        run_pipeline(["-s", f"http://127.0.0.1:{mjpeg_server}/", "-o", "none"])


# -- HTTP streams ----------------------------------------------------------------------------


def test_http_mjpeg_stream_delivers_advancing_frames(mjpeg_server: int) -> None:
    report, out, _ = run_pipeline(["-s", f"http://127.0.0.1:{mjpeg_server}/stream.mjpg", "--max-frames", "15",
                                   "-o", "none"])
    assert report["frames"] == 15
    assert {f.image.shape for f in out.frames} == {(240, 320, 3)}
    codes = [read_code(f.image) for f in out.frames]
    assert all(b > a for a, b in zip(codes, codes[1:], strict=False)), codes


def test_a_silent_http_host_fails_within_its_timeout_and_blocks_no_other_open(mjpeg_server: int) -> None:
    """A host that accepts the connection and never answers: our own GET gives up after open_timeout,
    before OpenCV's process-wide FFmpeg open lock is taken, so a good stream opens meanwhile."""
    with tar_pit() as pit:
        dead = NetworkStreamSource(f"http://127.0.0.1:{pit.port}/stream.mjpg", StreamOptions(open_timeout=3))
        failed: list[BaseException] = []

        def open_dead() -> None:
            try:
                dead.open()
            except BaseException as exc:
                failed.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=open_dead)
        thread.start()
        deadline = time.monotonic() + 2
        while not pit.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pit.accepted, "the pre-flight never connected"
        good = NetworkStreamSource(f"http://127.0.0.1:{mjpeg_server}/stream.mjpg", StreamOptions())
        try:
            good.open()
            opened_after = time.monotonic() - started
            assert good.read() is not None
        finally:
            good.close()
        thread.join(10)
        took = time.monotonic() - started
    assert opened_after < 2.5, f"the good stream waited {opened_after:.1f} s behind the silent host"
    assert len(failed) == 1 and isinstance(failed[0], SourceError), failed
    assert "did not answer in 3 s" in str(failed[0])
    assert 2.9 < took < 6


def test_http_stream_reconnects_after_the_server_restarts() -> None:
    port = free_port()
    server = start_mjpeg_server(port)
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    source = NetworkStreamSource(f"http://127.0.0.1:{port}/stream.mjpg", StreamOptions(read_timeout=3))
    capture = LiveCapture(source, "cam", bus, backoff=0.2, max_backoff=0.5)
    try:
        capture.start()
        assert capture.next(timeout=10) is not None
        stop(server)
        deadline = time.monotonic() + 15
        while not any(e.payload.get("state") == "lost" for e in events) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(e.payload.get("state") == "lost" for e in events)
        captured = capture.captured
        server = start_mjpeg_server(port)
        deadline = time.monotonic() + 20
        while capture.captured <= captured + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert capture.captured > captured + 3
        states = [e.payload["state"] for e in events if e.type == "source"]
        assert states[0] == "connected" and "lost" in states and states[-1] == "connected"
    finally:
        capture.stop()
        stop(server)


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A plain HTTP file server on 127.0.0.1 serving ``tmp_path``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_h264_stream_falls_back_from_low_latency_mode(http_files: tuple[Path, int],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    folder, port = http_files
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "2",
                    "-c:v", "libx264", "-bf", "2", "-f", "mpegts", str(folder / "clip.ts")], check=True, timeout=60)
    with caplog.at_level(logging.WARNING):
        report, out, _ = run_pipeline(["-s", f"http://127.0.0.1:{port}/clip.ts", "--max-frames", "20",
                                       "-o", "none"])
    assert report["frames"] == 20 and out.frames[0].image.shape == (120, 160, 3)
    assert any("retrying with FFmpeg's defaults" in r.getMessage() for r in caplog.records)


def test_ffmpeg_options_are_parsed_and_checked() -> None:
    source = NetworkStreamSource("http://x/", StreamOptions(ffmpeg_options="user_agent;framelens|rw_timeout;5"))
    assert source.ffmpeg_options() == {"fflags": "nobuffer", "flags": "low_delay", "user_agent": "framelens",
                                       "rw_timeout": "5"}
    assert NetworkStreamSource("http://x/", StreamOptions(low_latency=False)).ffmpeg_options() == {}
    with pytest.raises(ConfigError, match="stream-ffmpeg-options"):
        run_pipeline(["-s", "http://x/", "-c", "stream-ffmpeg-options=nobuffer", "-o", "none"])


def test_docs_list_every_source_and_output_option() -> None:
    page = (ROOT / "docs" / "sources-and-outputs.md").read_text()
    registry = get_plugin_manager().registry
    for kind, names in (("source", ["camera", "csi", "gstreamer", "video", "image", "images", "stream"]),
                        ("output", ["mjpeg", "file", "none"])):
        for name in names:
            spec = registry.get(kind, name)
            assert f"### {name}" in page or f"### image and {name}" in page, name
            for field in spec.options.model_fields:
                key = f"`{name}-{field.replace('_', '-')}`"
                assert key in page, f"docs/sources-and-outputs.md does not document {key}"
