"""Issue 10 for RTSP: the output behind the API key, and a camera that stalls with its TCP open."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
from helpers import free_port, wait_until
from rtsp_helpers import PATTERN, Framelens, ffprobe, serving

from framelens import EventBus, SourceError
from framelens.capture import LiveCapture
from framelens.plugins.rtsp.source import RtspSource, RtspSourceOptions

pytestmark = pytest.mark.timeout(120)


def _describe(port: int, auth: str | None = None) -> str:
    """The raw answer to an RTSP DESCRIBE (status line and headers)."""
    request = f"DESCRIBE rtsp://127.0.0.1:{port}/out RTSP/1.0\r\nCSeq: 1\r\n"
    if auth:
        request += f"Authorization: {auth}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall((request + "\r\n").encode())
        return sock.recv(4096).decode("latin-1")


def test_the_rtsp_output_wants_the_api_key_by_basic_or_digest() -> None:
    port = free_port()
    with serving(port, "-c", "rtsp-fps=15", "-c", "rtsp-api-key=s3cret"):
        answer = _describe(port)
        assert answer.startswith("RTSP/1.0 401"), answer
        # Both schemes are offered, so any player can authenticate.
        assert 'WWW-Authenticate: Basic realm=' in answer and "WWW-Authenticate: Digest realm=" in answer
        wrong = _describe(port, "Basic " + base64.b64encode(b"framelens:nope").decode())
        assert wrong.startswith("RTSP/1.0 401"), wrong
        with pytest.raises(subprocess.CalledProcessError):
            ffprobe(f"rtsp://127.0.0.1:{port}/out", timeout=20)
        # ffprobe answers the challenge itself (Digest, the stronger one offered).
        stream = ffprobe(f"rtsp://framelens:s3cret@127.0.0.1:{port}/out")
        assert stream["codec_name"] == "h264"
        # framelens's own rtsp source reads it with the credentials, and says what is missing without.
        with pytest.raises(SourceError, match="wants a user name and password"):
            RtspSource(f"rtsp://127.0.0.1:{port}/out", RtspSourceOptions(open_timeout=3)).open()
        source = RtspSource(f"rtsp://framelens:s3cret@127.0.0.1:{port}/out", RtspSourceOptions(open_timeout=5))
        try:
            info = source.open()
            assert source.read() is not None and info.width
        finally:
            source.close()


def test_the_rtsp_output_warns_once_when_it_serves_other_machines_without_a_key() -> None:
    port = free_port()
    exposed = Framelens([*PATTERN, "-o", f"rtsp://0.0.0.0:{port}/out", "-c", "rtsp-fps=15"])
    try:
        exposed.wait_listening(port)
        time.sleep(0.5)
    finally:
        exposed.stop()
    warnings = [line for line in (exposed.stderr or "").splitlines() if "to anyone who can reach it" in line]
    assert len(warnings) == 1, exposed.stderr
    assert "rtsp-api-key" in warnings[0]


def _camera(port: int) -> Framelens:
    cam = Framelens([*PATTERN, "-o", f"rtsp://127.0.0.1:{port}/out", "-c", "rtsp-fps=15"])
    cam.wait_listening(port)
    return cam


def test_a_stalled_camera_is_stale_at_once_lost_after_the_read_timeout_and_only_once() -> None:
    """SIGSTOP the camera: its TCP connection stays open, frames stop."""
    port = free_port()
    cam = _camera(port)
    events = EventBus()
    states: list[str] = []
    events.subscribe(lambda e: states.append(str(e.payload.get("state"))) if e.type == "source" else None)
    source = RtspSource(f"rtsp://127.0.0.1:{port}/out", RtspSourceOptions(read_timeout=2.0, open_timeout=3.0))
    capture = LiveCapture(source, "cam", events, backoff=0.2, max_backoff=0.5)
    try:
        capture.start(wait_open=True)
        wait_until(lambda: capture.captured > 10, 20, "no frames from the camera")
        assert capture.state == "live"
        os.kill(cam.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        to_stale = wait_until(lambda: capture.state == "stale", 5, "not stale")
        wait_until(lambda: capture.state == "lost", 10, "not lost")
        to_lost = time.monotonic() - stopped
        time.sleep(3.0)  # reopen attempts fail meanwhile (the camera cannot answer)
        lost_during_outage = states.count("lost")
        os.kill(cam.proc.pid, signal.SIGCONT)
        to_recover = wait_until(lambda: capture.state == "live" and capture.frame_age() < 0.5, 30, "did not recover")
    finally:
        os.kill(cam.proc.pid, signal.SIGCONT)
        capture.stop()
        cam.stop()
    # Stale within a few frame intervals, lost within the 2 s read timeout (plus the watchdog's tick).
    assert to_stale < 1.5, to_stale
    assert 1.9 < to_lost < 3.0, to_lost
    assert lost_during_outage == 1, states
    assert states[-1] == "connected" and to_recover < 30


def test_a_tar_pit_rtsp_host_fails_the_open_within_its_timeout() -> None:
    """A host that accepts the connection and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    source = RtspSource(f"rtsp://127.0.0.1:{port}/x", RtspSourceOptions(open_timeout=1.0, read_timeout=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match="did not answer within 1 s"):
            source.open()
    finally:
        stop.set()
        thread.join(2)
        for s in held:
            s.close()
        listener.close()
    # FFmpeg's open timeout, then the 1 s DESCRIBE probe that names the reason.
    assert time.monotonic() - started < 4.0
