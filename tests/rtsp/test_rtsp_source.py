"""The ``rtsp://`` source, reading framelens's own RTSP output (a real gst-rtsp-server)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, run_cli, wait_until
from rtsp_helpers import PATTERN, Collector, Framelens, assert_counter_advances, serving

from framelens import SourceError
from framelens.plugins.rtsp.source import RtspSource, RtspSourceOptions
from framelens.plugins.sources.testpattern import read_code
from framelens.testing import run_pipeline

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_reads_a_live_rtsp_stream(port: int, transport: str) -> None:
    with serving(port, "-c", "rtsp-fps=15"):
        report, out, _ = run_pipeline(["-s", f"rtsp://127.0.0.1:{port}/out", "-c", f"rtsp-transport={transport}",
                                       "--max-frames", "30"])
    assert report["frames"] == 30
    frames = out.frames
    assert frames[0].image.shape == (240, 320, 3)
    assert_counter_advances([read_code(f.image) for f in frames[5:]], at_least=5)


def _source_events(fl: Framelens) -> list[dict[str, object]]:
    return [e["payload"] for e in fl.read_events() if e["type"] == "source"]


def test_survives_a_camera_restart_and_reports_it(tmp_path: Path) -> None:
    """camera (framelens A) -> framelens B reading it over RTSP and re-serving it -> a viewer.

    A stops and comes back on the same port: B reports ``lost`` then ``connected``,
    its own stream goes on meanwhile (repeating the last frame), and the viewer then
    sees A's frame counter start again from zero.
    """
    cam_port, relay_port = free_port(), free_port()
    cam_args = [*PATTERN, "-o", f"rtsp://127.0.0.1:{cam_port}/out", "-c", "rtsp-fps=15"]
    camera = Framelens(cam_args)
    camera.wait_listening(cam_port)
    relay = Framelens(["-s", f"rtsp://127.0.0.1:{cam_port}/out", "-c", "rtsp-read-timeout=3",
                       "-o", f"rtsp://127.0.0.1:{relay_port}/out", "-c", "rtsp-fps=15"],
                      events=tmp_path / "relay.jsonl")
    viewer = Collector(f"rtsp://127.0.0.1:{relay_port}/out")
    try:
        relay.wait_listening(relay_port)
        viewer.start()
        viewer.wait_for(lambda s: len(s) >= 20 and s[-1][1] >= 15, 60, "the viewer got no camera frames")
        assert camera.stop() == 0, camera.stderr

        wait_until(lambda: any(p["state"] == "lost" for p in _source_events(relay)), 30, "no 'lost' event")
        before = len(viewer.samples)
        last_code = viewer.samples[-1][1]
        viewer.wait_for(lambda s: len(s) >= before + 15, 30, "the relay's stream stopped with its camera")

        camera = Framelens(cam_args)
        camera.wait_listening(cam_port)
        restart = len(viewer.samples)
        wait_until(lambda: [p["state"] for p in _source_events(relay)].count("connected") >= 2, 60,
              "no second 'connected' event after the camera came back")
        # The camera's counter restarted: the viewer sees smaller numbers again, advancing.
        def new_frames(samples: list[tuple[float, int]]) -> list[int]:
            return [c for _, c in samples[restart:] if c < last_code]

        viewer.wait_for(lambda s: len(new := new_frames(s)) > 1 and new[-1] - new[0] >= 5, 60,
                        "the camera's new frames never came")
    finally:
        viewer.stop()
        relay_rc = relay.stop()
        camera.stop()
    assert relay_rc == 0, relay.stderr
    assert viewer.error is None
    states = [p["state"] for p in _source_events(relay)]
    assert states[0] == "connected"
    assert "connected" in states[states.index("lost") + 1 :]
    lost = next(p for p in _source_events(relay) if p["state"] == "lost")
    assert lost["url"] == f"rtsp://127.0.0.1:{cam_port}/out" and lost["reason"]
    assert_counter_advances(new_frames(viewer.samples), at_least=5)


@pytest.mark.parametrize("scheme", ["rtsp", "rtsps"])
def test_a_dead_camera_fails_at_once_with_the_reason(scheme: str) -> None:
    port = free_port()
    result = run_cli(["run", "-s", f"{scheme}://admin:secret@127.0.0.1:{port}/cam", "-o", "none",
                      "--max-frames", "1"])
    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port} (connection refused)" in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wrong_path_is_reported_as_404(port: int) -> None:
    with serving(port, "-c", "rtsp-fps=15"):
        source = RtspSource(f"rtsp://127.0.0.1:{port}/nothing-here", RtspSourceOptions())
        with pytest.raises(SourceError, match=r"no stream at /nothing-here \(404 Not Found\)"):
            source.open()
        source.close()


def test_rtsps_to_a_plain_rtsp_server_says_tls_failed(port: int) -> None:
    with serving(port, "-c", "rtsp-fps=15"):
        source = RtspSource(f"rtsps://127.0.0.1:{port}/out", RtspSourceOptions(open_timeout=2))
        with pytest.raises(SourceError, match=f"TLS with 127.0.0.1:{port} failed"):
            source.open()


@contextlib.contextmanager
def tcp_server(answer: bytes | None) -> Iterator[int]:
    """A TCP server that answers every request with ``answer`` (None: never answers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except OSError:
                continue
            conns.append(conn)
            if answer is not None:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    request = conn.recv(4096)
                    cseq = re.search(rb"CSeq: *(\d+)", request)
                    conn.sendall(answer.replace(b"{cseq}", cseq.group(1) if cseq else b"1"))
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for c in conns:
            c.close()
        listener.close()


def test_a_hung_camera_times_out() -> None:
    with tcp_server(None) as port:
        source = RtspSource(f"rtsp://127.0.0.1:{port}/cam", RtspSourceOptions(open_timeout=1))
        with pytest.raises(SourceError, match="did not answer within 1 s"):
            source.open()


@pytest.mark.parametrize(
    ("url", "answer", "message"),
    [
        ("rtsp://admin:typo@127.0.0.1:{port}/cam",
         b'RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n',
         "refused the credentials (401 Unauthorized"),
        ("rtsp://127.0.0.1:{port}/cam",
         b'RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm="cam"\r\n\r\n',
         "wants a user name and password"),
        ("rtsp://127.0.0.1:{port}/cam", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
         "does not speak RTSP"),
    ],
)
def test_server_answers_are_explained(url: str, answer: bytes, message: str) -> None:
    with tcp_server(answer) as port:
        source = RtspSource(url.format(port=port), RtspSourceOptions(open_timeout=2))
        with pytest.raises(SourceError, match=re.escape(message)) as info:
            source.open()
    assert "typo" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "rtsp-transport=sctp"], "rtsp-transport"),
        (["-c", "rtsp-ffmpeg-options=probesize"], "is not key;value"),
        (["-c", "rtsp-open-timeout=0"], "rtsp-open-timeout"),
    ],
)
def test_bad_source_settings_are_config_errors(args: list[str], message: str) -> None:
    result = run_cli(["run", "-s", "rtsp://127.0.0.1:1/cam", *args, "-o", "none", "--max-frames", "1"])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_ffmpeg_options_follow_the_settings() -> None:
    low = RtspSource("rtsp://cam/x", RtspSourceOptions())
    assert low.ffmpeg_options() == {"rtsp_transport": "tcp", "probesize": "32", "fpsprobesize": "0",
                                    "flags": "low_delay"}
    plain = RtspSource("rtsp://cam/x", RtspSourceOptions(transport="udp", low_latency=False,
                                                           ffmpeg_options="probesize;500000|stimeout;1"))
    assert plain.ffmpeg_options() == {"rtsp_transport": "udp", "probesize": "500000", "stimeout": "1"}
    assert low.address == ("cam", 554)
