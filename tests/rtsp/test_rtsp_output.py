"""The ``rtsp`` output, checked with real players: ffprobe and OpenCV (FFmpeg) over RTSP."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from prometheus_client import generate_latest
from rtsp_helpers import (
    PATTERN,
    Collector,
    Framelens,
    assert_counter_advances,
    codes,
    ffprobe,
    open_client,
    port_is_free,
    read_frames,
    serving,
)

from framelens import Context, Frame, OutputError
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.rtsp.output import RtspOutput, RtspOutputOptions, letterbox, parse_output_url
from framelens.plugins.sources.testpattern import write_code

pytestmark = pytest.mark.timeout(120)


def test_ffprobe_sees_h264_at_the_configured_rate(port: int) -> None:
    with serving(port, "-c", "rtsp-fps=15"):
        stream = ffprobe(f"rtsp://127.0.0.1:{port}/out")
    assert stream["codec_name"] == "h264"
    assert stream["profile"] in ("Constrained Baseline", "Baseline")
    assert (stream["width"], stream["height"]) == (320, 240)
    assert stream["r_frame_rate"] == "15/1"


def test_scales_to_the_configured_size_keeping_the_picture(port: int) -> None:
    with serving(port, "-c", "rtsp-fps=15", "-c", "rtsp-width=480", "-c", "rtsp-height=360"):
        url = f"rtsp://127.0.0.1:{port}/out"
        stream = ffprobe(url)
        cap = open_client(url)
        frames = read_frames(cap, 20)
        cap.release()
    assert (stream["width"], stream["height"]) == (480, 360)
    assert frames[0].shape == (360, 480, 3)
    assert_counter_advances(codes(frames[-12:]), at_least=2)


def test_two_clients_share_the_stream_and_the_counter_advances(port: int, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with serving(port, "-c", "rtsp-fps=15", events=events) as fl:
        url = f"rtsp://127.0.0.1:{port}/out"
        a, b = Collector(url), Collector(url)
        a.start()
        b.start()
        for c in (a, b):
            c.wait_for(lambda s: len(s) >= 45, 60, "a client did not get 45 frames")
        a.stop()
        b.stop()
        rtsp_events = [e["payload"] for e in fl.read_events() if e["type"] == "output"]
    for c in (a, b):
        values = [code for _, code in c.samples]
        assert_counter_advances(values, at_least=10)
    # Both watched the same frames (one shared encoder), at the same time.
    shared = {code for _, code in a.samples} & {code for _, code in b.samples}
    assert len(shared) >= 10
    assert max(e.get("clients", 0) for e in rtsp_events) == 2
    assert [e["state"] for e in rtsp_events][0] == "serving"


def test_a_late_joiner_gets_a_key_frame_at_once(port: int) -> None:
    # One key frame every 100 s: without the key frame forced on PLAY the second
    # viewer could not decode anything for up to 100 s.
    with serving(port, "-c", "rtsp-fps=15", "-c", "rtsp-keyframe-interval=1500"):
        url = f"rtsp://127.0.0.1:{port}/out"
        first = Collector(url)
        first.start()
        first.wait_for(lambda s: len(s) >= 20, 60, "the first client got no frames")
        late = open_client(url, timeout=20)
        t0 = time.monotonic()
        frames = read_frames(late, 10)
        waited = time.monotonic() - t0
        late.release()
        first.stop()
    assert waited < 20
    assert_counter_advances(codes(frames[2:]), at_least=2)
    assert codes(frames)[-1] >= first.samples[19][1]


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(["run", *PATTERN, "-o", f"rtsp://127.0.0.1:{port}/out", "--max-frames", "5"])
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_stop_frees_the_port_and_a_restart_serves_again(port: int) -> None:
    url = f"rtsp://127.0.0.1:{port}/out"
    for _ in range(2):
        with serving(port, "-c", "rtsp-fps=15"):
            cap = open_client(url)
            first = codes(read_frames(cap, 30))
            # Stopped while the viewer is still connected: the server must still go away.
        assert port_is_free(port)
        ok, _ = cap.read()
        deadline = time.monotonic() + 20
        while ok and time.monotonic() < deadline:
            ok, _ = cap.read()
        cap.release()
        assert not ok, "the stream went on after framelens stopped"
        assert_counter_advances(first[-15:], at_least=3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "rtsp://127.0.0.1:99999/out"], "invalid port"),
        (["-o", "rtsp://user:pw@127.0.0.1:8554/out"], "credentials"),
        (["-o", "rtsp", "-c", "rtsp-width=640"], "set both rtsp-width and rtsp-height"),
        (["-o", "rtsp", "-c", "rtsp-width=641", "-c", "rtsp-height=480"], "must be even"),
        (["-o", "rtsp", "-c", "rtsp-encoder=vp8enc"], "rtsp-encoder"),
        (["-o", "rtsp", "-c", "rtsp-transport=udp"], "unknown option 'rtsp-transport'"),
    ],
)
def test_bad_settings_are_config_errors(args: list[str], message: str) -> None:
    result = run_cli(["run", *PATTERN, *args, "--max-frames", "1"])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_encoder_names_what_to_install(port: int) -> None:
    # nvv4l2h264enc exists only on Jetson.
    result = run_cli(["run", *PATTERN, "-o", f"rtsp://127.0.0.1:{port}/out", "-c", "rtsp-encoder=nvv4l2h264enc",
                      "--max-frames", "1"])
    assert result.returncode == 1
    assert "encoder nvv4l2h264enc is not available" in result.stderr
    assert "nvidia-l4t-gstreamer" in result.stderr
    assert port_is_free(port)


def test_missing_pygobject_names_what_to_install(port: int, tmp_path: Path) -> None:
    # A 'gi' package that fails to import, first on the path, as on a machine without PyGObject.
    fake = tmp_path / "nogi" / "gi"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named gi')\n")
    result = run_cli(["run", *PATTERN, "-o", f"rtsp://127.0.0.1:{port}/out", "--max-frames", "1"],
                     env={"PYTHONPATH": str(tmp_path / "nogi")})
    assert result.returncode == 1
    assert "PyGObject" in result.stderr
    assert "pip install 'framelens[rtsp]'" in result.stderr
    assert "gir1.2-gst-rtsp-server-1.0" in result.stderr


def test_openh264_encoder_serves_too(port: int) -> None:
    with serving(port, "-c", "rtsp-fps=15", "-c", "rtsp-encoder=openh264enc"):
        url = f"rtsp://127.0.0.1:{port}/out"
        cap = open_client(url)
        frames = read_frames(cap, 20)
        cap.release()
    assert_counter_advances(codes(frames[-10:]), at_least=2)


# -- the stream goes on without new frames (in-process output, real server and client) ------


@pytest.fixture
def output(port: int) -> Iterator[RtspOutput]:
    context = Context(get_plugin_manager().registry)
    options = RtspOutputOptions(width=320, height=240, fps=15, stale_after=1.0)
    out = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/out"), options, context)
    out.start()
    try:
        yield out
    finally:
        out.close()
        context.close()
    assert port_is_free(port)


def _frame(n: int) -> Frame:
    image = np.full((240, 320, 3), 90, np.uint8)
    write_code(image, n)
    return Frame(image, n, time.time(), "test")


def test_placeholder_then_frames_then_repeats_with_a_banner(output: RtspOutput) -> None:
    client = Collector(str(output.url))
    client.start()
    # No frame written yet: the viewer still gets a stream (the placeholder, code 0).
    client.wait_for(lambda s: len(s) >= 10, 60, "no placeholder frames")
    assert {code for _, code in client.samples} == {0}
    for n in (5, 6, 7):
        output.write(_frame(n))
        time.sleep(0.1)
    client.wait_for(lambda s: s[-1][1] == 7, 30, "the written frames did not arrive")
    seen = len(client.samples)
    # Nothing new for a while: the stream keeps going with the last frame.
    client.wait_for(lambda s: len(s) >= seen + 45, 60, "the stream stalled without new frames")
    metrics = generate_latest(output.context.metrics).decode()
    client.stop()
    assert {code for _, code in client.samples[seen:]} == {7}
    assert client.error is None
    # More than stale-after (1 s) later, the repeated frame says that no new video came.
    assert client.last_image is not None
    top, middle = client.last_image[:20].mean(), client.last_image[100:140].mean()
    assert top < 0.6 * middle, (top, middle)
    port = output.url.port
    assert f'framelens_rtsp_clients{{path="/out",port="{port}"}} 1.0' in metrics
    sent = next(line for line in metrics.splitlines() if line.startswith("framelens_rtsp_frames_sent_total"))
    assert float(sent.split()[-1]) >= len(client.samples) - 5


def test_a_viewer_before_the_first_frame_then_gets_the_frames_own_size(port: int) -> None:
    context = Context(get_plugin_manager().registry)
    out = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/out"), RtspOutputOptions(fps=15), context)
    out.start()
    try:
        # ffprobe as the player: it reports every decoded frame's size.
        probe = subprocess.Popen(
            ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-read_intervals", "%+8", "-show_frames",
             "-show_entries", "frame=width,height", "-of", "csv=p=0", str(out.url)],
            stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while out.clients == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the player is set up and watching the placeholder
        for n in range(45):
            out.write(_frame(n))
            time.sleep(1 / 15)
        lines, _ = probe.communicate(timeout=60)
    finally:
        out.close()
        context.close()
    sizes = [tuple(line.split(",")[:2]) for line in lines.split()]
    assert sizes[0] == ("1280", "720")  # the placeholder, before any frame
    assert sizes[-1] == ("320", "240")
    assert sizes.index(("320", "240")) > 0


def test_letterbox_keeps_the_aspect_ratio() -> None:
    image = np.full((240, 320, 3), 200, np.uint8)
    boxed = letterbox(image, (640, 360))
    assert boxed.shape == (360, 640, 3)
    assert boxed[:, :80].max() == 0 and boxed[:, -80:].max() == 0  # bars left and right
    assert boxed[:, 80:560].min() == 200
    same = np.zeros((360, 640, 3), np.uint8)
    assert letterbox(same, (640, 360)) is same


def test_start_fails_cleanly_when_the_port_is_taken(port: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        out = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/out"), RtspOutputOptions(),
                         Context(get_plugin_manager().registry))
        with pytest.raises(OutputError, match="Address already in use"):
            out.start()
        out.close()


def test_default_target_is_the_jetson_url() -> None:
    assert str(parse_output_url("rtsp")) == "rtsp://127.0.0.1:5011/out"  # loopback by default (issue 10)
    assert str(parse_output_url("rtsp://cam.local")) == "rtsp://cam.local:554/out"
    assert str(parse_output_url("rtsp://10.0.0.2:8554/live/")) == "rtsp://10.0.0.2:8554/live"


def test_events_name_the_url_and_clients(port: int, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    fl = Framelens([*PATTERN, "-o", f"rtsp://127.0.0.1:{port}/out", "-c", "rtsp-fps=15"], events=events)
    try:
        fl.wait_listening(port)
        cap = open_client(f"rtsp://127.0.0.1:{port}/out")
        read_frames(cap, 5)
        cap.release()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [e["payload"]["state"] for e in fl.read_events() if e["type"] == "output"]
            if "client-disconnected" in states:
                break
            time.sleep(0.1)
    finally:
        assert fl.stop() == 0, fl.stderr
    payloads = [e["payload"] for e in fl.read_events() if e["type"] == "output"]
    states = [p["state"] for p in payloads]
    assert states[0] == "serving" and states[-1] == "stopped"
    assert "client-connected" in states and "client-disconnected" in states
    assert all(p["url"] == f"rtsp://127.0.0.1:{port}/out" for p in payloads)
