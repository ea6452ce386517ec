"""The vila-microservice setup: live sources opened through the HTTP API appear on the RTSP output."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from helpers import free_port
from rtsp_helpers import PATTERN, Collector, Framelens, assert_counter_advances, port_is_listening

pytestmark = pytest.mark.timeout(120)


def test_a_stream_opened_through_the_api_is_published_on_rtsp() -> None:
    camera_port, out_port, http_port = free_port(), free_port(), free_port()
    # The "camera": another framelens serving the test pattern over RTSP.
    camera = Framelens([*PATTERN, "-o", f"rtsp://127.0.0.1:{camera_port}/out", "-c", "rtsp-fps=15"])
    service = subprocess.Popen(
        # The camera is on loopback, which requests may dial only when the operator allows it.
        [sys.executable, "-m", "framelens", "serve", "--port", str(http_port), "-c", "http-allow-private-urls=true",
         "-o", f"rtsp://127.0.0.1:{out_port}/out", "-c", "rtsp-fps=15", "-c", "rtsp-width=320",
         "-c", "rtsp-height=240"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    viewer = Collector(f"rtsp://127.0.0.1:{out_port}/out")
    try:
        camera.wait_listening(camera_port)
        deadline = time.monotonic() + 30
        while not (port_is_listening(out_port) and port_is_listening(http_port)):
            assert service.poll() is None and time.monotonic() < deadline, "framelens serve did not start"
            time.sleep(0.1)
        viewer.start()
        # No live source yet: the viewer gets the "waiting for video" placeholder.
        viewer.wait_for(lambda s: len(s) >= 10, 60, "no placeholder frames")
        assert {code for _, code in viewer.samples} == {0}
        opened = httpx.post(f"http://127.0.0.1:{http_port}/v1/streams",
                            json={"url": f"rtsp://127.0.0.1:{camera_port}/out", "id": "cam"}, timeout=60)
        assert opened.status_code == 201, opened.text
        seen = len(viewer.samples)
        viewer.wait_for(lambda s: len(s) > seen + 30, 60, "the camera's frames did not reach the RTSP output")
    finally:
        viewer.stop()
        service.send_signal(2)
        _, err = service.communicate(timeout=30)
        camera.stop()
    assert service.returncode == 0, err
    camera_frames = [code for _, code in viewer.samples[seen:] if code > 0]
    assert len(camera_frames) >= 20
    assert_counter_advances(camera_frames, at_least=10)
