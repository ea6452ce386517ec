"""Several cameras on one RTSP port: one gst-rtsp-server per host:port, one path per output."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from helpers import wait_until
from rtsp_helpers import assert_counter_advances, codes, ffprobe, open_client, port_is_free, read_frames

from framelens import ConfigError, Context, Pipeline, Site
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.rtsp.output import RtspOutput, RtspOutputOptions, parse_output_url

pytestmark = pytest.mark.timeout(180)


def _status(port: int, path: str) -> str:
    """The status line of an RTSP DESCRIBE of ``path``."""
    request = f"DESCRIBE rtsp://127.0.0.1:{port}{path} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        sock.sendall(request.encode())
        return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def _camera(width: int, height: int) -> dict[str, Any]:
    return {"source": "testpattern",
            "options": {"testpattern-width": width, "testpattern-height": height, "testpattern-fps": 15}}


def test_two_cameras_of_a_site_share_one_port_and_one_stopping_leaves_the_other(port: int) -> None:
    pipeline = Pipeline(cameras={"door": _camera(320, 240), "garage": _camera(192, 144)},
                        outputs=[f"rtsp://127.0.0.1:{port}/{{camera}}"], options={"rtsp-fps": 15})
    site = pipeline.build()
    assert isinstance(site, Site)
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(report=site.run()), daemon=True)
    runner.start()
    try:
        wait_until(lambda: not port_is_free(port), 30, "nothing listens on the shared port")
        # Each path is its own camera: ffprobe sees each camera's own size.
        door = ffprobe(f"rtsp://127.0.0.1:{port}/door")
        garage = ffprobe(f"rtsp://127.0.0.1:{port}/garage")
        assert (door["width"], door["height"]) == (320, 240)
        assert (garage["width"], garage["height"]) == (192, 144)
        assert _status(port, "/yard").startswith("RTSP/1.0 404")
        # A viewer of the garage stays connected while the door camera stops.
        cap = open_client(f"rtsp://127.0.0.1:{port}/garage")
        before = codes(read_frames(cap, 15))
        site.cameras["door"].stop()
        wait_until(lambda: _status(port, "/door").startswith("RTSP/1.0 404"), 30, "the door's path is still served")
        after = read_frames(cap, 30)
        cap.release()
        assert after[0].shape == (144, 192, 3)
        assert_counter_advances(before + codes(after), at_least=10)
        assert ffprobe(f"rtsp://127.0.0.1:{port}/garage")["width"] == 192
    finally:
        site.stop()
        runner.join(30)
    assert not runner.is_alive()
    # The last path went with the garage camera: the server is gone and the port is free.
    assert port_is_free(port)
    cameras = result["report"]["cameras"]
    assert cameras["door"]["frames"] > 0 and cameras["garage"]["frames"] > cameras["door"]["frames"]


def test_two_outputs_asking_for_one_path_is_a_config_error_naming_both(port: int) -> None:
    same = f"rtsp://127.0.0.1:{port}/cam"
    pipeline = Pipeline(cameras={"a": {"source": "testpattern", "outputs": [same]},
                                 "b": {"source": "testpattern", "outputs": [same]}})
    with pytest.raises(ConfigError, match=r"rtsp output b-rtsp .* and rtsp output a-rtsp .* both serve "
                                          rf"rtsp://127\.0\.0\.1:{port}/cam"):
        pipeline.build()
    assert port_is_free(port)


def test_outputs_of_one_port_with_other_credentials_are_a_config_error(port: int) -> None:
    url = f"rtsp://127.0.0.1:{port}/{{camera}}"
    pipeline = Pipeline(cameras={"a": "testpattern", "b": {"source": "testpattern",
                                                           "options": {"rtsp-api-key": "k2-different"}}},
                        outputs=[url], options={"rtsp-api-key": "s3cret"})
    with pytest.raises(ConfigError, match=r"rtsp output b-rtsp .*: rtsp-user / rtsp-api-key differ from those of "
                                          rf"rtsp output a-rtsp .* on the same port 127\.0\.0\.1:{port}") as info:
        pipeline.build()
    assert "s3cret" not in str(info.value) and "k2-different" not in str(info.value)
    # One key for both: accepted.
    assert isinstance(Pipeline(cameras={"a": "testpattern", "b": "testpattern"}, outputs=[url],
                               options={"rtsp-api-key": "s3cret"}).build(), Site)


def test_separate_runs_of_one_process_share_the_server_and_its_rules(port: int) -> None:
    """Two runs (two contexts) in one process: the process-wide server is shared, checked at start."""
    registry = get_plugin_manager().registry
    contexts = [Context(registry) for _ in range(4)]
    opts = RtspOutputOptions(width=160, height=120, fps=15)
    a = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/a"), opts, contexts[0], "a")
    b = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/b"), opts, contexts[1], "b")
    same = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/a"), opts, contexts[2], "again")
    keyed = RtspOutput(parse_output_url(f"rtsp://127.0.0.1:{port}/c"), RtspOutputOptions(api_key="k"),
                       contexts[3], "keyed")
    a.start()
    try:
        b.start()
        with pytest.raises(ConfigError, match=r"rtsp output again .* and rtsp output a .* both serve"):
            same.start()
        with pytest.raises(ConfigError, match="rtsp-user / rtsp-api-key differ"):
            keyed.start()
        assert ffprobe(f"rtsp://127.0.0.1:{port}/b")["width"] == 160
        a.close()
        assert _status(port, "/a").startswith("RTSP/1.0 404")
        assert ffprobe(f"rtsp://127.0.0.1:{port}/b")["height"] == 120
        # The path is free again for a new output.
        same.start()
        assert ffprobe(f"rtsp://127.0.0.1:{port}/a")["width"] == 160
    finally:
        for out in (a, b, same, keyed):
            out.close()
        for ctx in contexts:
            ctx.close()
    assert port_is_free(port)
