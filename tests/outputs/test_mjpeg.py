"""The mjpeg output, read by real HTTP clients (httpx, raw sockets) and headless Chromium."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import free_port, run_cli

from framelens import ConfigError, Context, Frame, OutputError, decode_image
from framelens.plugins.outputs.mjpeg import MjpegOptions, MjpegOutput
from framelens.plugins.sources.testpattern import read_code, render
from framelens.registry import Registry
from framelens.testing import run_pipeline

BARS = np.zeros((240, 320, 3), np.uint8)


def pattern(n: int) -> Frame:
    return Frame(render(BARS, n), n, time.time())


def parts(response: httpx.Response) -> Iterator[tuple[dict[str, str], bytes]]:
    """Parse a multipart/x-mixed-replace body into (headers, body) parts, strictly."""
    match = re.search(r"boundary=([^;]+)", response.headers["content-type"])
    assert match, response.headers["content-type"]
    boundary = b"--" + match.group(1).encode()
    buf = b""
    stream = response.iter_bytes()

    def more() -> bytes:
        chunk = next(stream, None)
        if chunk is None:
            raise EOFError
        return chunk

    # The body starts with a boundary line; every part is followed by CRLF and the next boundary.
    while True:
        try:
            while b"\r\n\r\n" not in buf:
                buf += more()
        except EOFError:
            assert buf.strip() in (b"", boundary), buf[:200]  # the server ends only between parts
            return
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == boundary, lines[0]
        headers = {k.strip().lower(): v.strip() for k, v in (ln.decode().split(":", 1) for ln in lines[1:])}
        size = int(headers["content-length"])
        while len(buf) < size + 2:
            buf += more()
        body, tail, buf = buf[:size], buf[size:size + 2], buf[size + 2:]
        assert tail == b"\r\n"
        yield headers, body


def read_parts(url: str, count: int, *, timeout: float = 20) -> list[tuple[dict[str, str], bytes]]:
    got: list[tuple[dict[str, str], bytes]] = []
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        assert "no-cache" in response.headers["cache-control"]
        for part in parts(response):
            got.append(part)
            if len(got) == count:
                break
    return got


class Server:
    """An MjpegOutput on a private context, fed by the test."""

    def __init__(self, **options: Any) -> None:
        self.context = Context(Registry())
        self.context.runner.start()
        self.output = MjpegOutput(MjpegOptions(**{"host": "127.0.0.1", "port": 0, **options}), self.context)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.output.port}{self.output.options.path}"

    def close(self) -> None:
        self.output.close()
        self.context.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**options: Any) -> Server:
        server = Server(**options)
        server.output.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def feed(output: MjpegOutput, stop: threading.Event, fps: float = 60) -> threading.Thread:
    """Write pattern frames into ``output`` until ``stop`` is set, like the loop would."""

    def run() -> None:
        n = 0
        while not stop.is_set():
            output.write(pattern(n))
            n += 1
            time.sleep(1 / fps)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- the stream --------------------------------------------------------------------------------


def test_parts_are_jpegs_of_advancing_frames(serve: Callable[..., Server]) -> None:
    server = serve(quality=90)
    stop = threading.Event()
    feed(server.output, stop)
    try:
        got = read_parts(server.base + "stream.mjpg", 12)
    finally:
        stop.set()
    indices = []
    for headers, body in got:
        assert headers["content-type"] == "image/jpeg"
        image = decode_image(body)
        assert image.shape == (240, 320, 3)
        assert read_code(image) == int(headers["x-frame-index"])  # the picture is the frame it says
        indices.append(int(headers["x-frame-index"]))
    assert all(b > a for a, b in zip(indices, indices[1:], strict=False)), indices


def test_nothing_is_encoded_while_nobody_watches(serve: Callable[..., Server]) -> None:
    server = serve()
    for n in range(20):
        server.output.write(pattern(n))
    time.sleep(0.3)
    assert server.output.frames_encoded == 0
    got = read_parts(server.base + "stream.mjpg", 1)  # a late viewer still gets the newest frame at once
    assert int(got[0][0]["x-frame-index"]) == 19
    assert server.output.frames_encoded == 1


def test_two_viewers_share_one_encoding_per_frame(serve: Callable[..., Server]) -> None:
    server = serve()
    results: list[list[tuple[dict[str, str], bytes]]] = [[], []]
    readers = [threading.Thread(target=lambda i=i: results[i].extend(read_parts(server.base + "stream.mjpg", 25)))
               for i in range(2)]
    for r in readers:
        r.start()
    wait_until(lambda: server.output.viewers == 2)
    stop = threading.Event()
    feed(server.output, stop, fps=30)
    for r in readers:
        r.join(30)
    stop.set()
    a = {int(h["x-frame-index"]): body for h, body in results[0]}
    b = {int(h["x-frame-index"]): body for h, body in results[1]}
    assert len(a) == len(b) == 25
    common = a.keys() & b.keys()
    assert len(common) >= 20
    assert all(a[i] == b[i] for i in common)  # byte-identical: one encoding served both
    assert server.output.frames_encoded < len(a) + len(b)


def test_snapshot_and_page(serve: Callable[..., Server]) -> None:
    server = serve()
    with httpx.Client(timeout=10) as client:
        assert client.get(server.base + "snapshot.jpg").status_code == 503  # no frame yet
        server.output.write(pattern(7))
        snap = client.get(server.base + "snapshot.jpg")
        assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
        assert read_code(decode_image(snap.content)) == 7 and snap.headers["x-frame-index"] == "7"
        page = client.get(server.base)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        # The script sets the stream's URL, so that the page's ?key= goes with it (issue 10).
        assert 'video.src = "stream.mjpg"' in page.text and 'href="snapshot.jpg"' in page.text


def test_path_prefix_moves_everything(serve: Callable[..., Server]) -> None:
    server = serve(path="/cam")
    server.output.write(pattern(3))
    with httpx.Client(timeout=10) as client:
        assert server.base.endswith("/cam/")
        assert client.get(server.base).status_code == 200
        redirect = client.get(server.base.rstrip("/"))
        assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/cam/")
        assert client.get(server.base + "snapshot.jpg").status_code == 200
        assert client.get(f"http://127.0.0.1:{server.output.port}/").status_code == 404


def test_max_fps_limits_encoding(serve: Callable[..., Server]) -> None:
    server = serve(**{"max_fps": 5})
    stop = threading.Event()
    feed(server.output, stop, fps=100)
    started = time.monotonic()
    got = read_parts(server.base + "stream.mjpg", 6)
    elapsed = time.monotonic() - started
    stop.set()
    assert elapsed >= 0.9  # 6 frames at 5 fps need at least a second, whatever the input rate
    indices = [int(h["x-frame-index"]) for h, _ in got]
    assert min(b - a for a, b in zip(indices, indices[1:], strict=False)) > 2  # frames between were skipped


# -- it never holds up the loop ----------------------------------------------------------------


def test_a_stalled_and_a_slow_viewer_do_not_hold_up_the_loop_or_each_other() -> None:
    port = free_port()
    fast: list[int] = []
    slow: list[int] = []
    stalled = socket.socket()
    finished = threading.Event()

    def watch_fast() -> None:
        wait_for(port)
        with httpx.stream("GET", f"http://127.0.0.1:{port}/stream.mjpg", timeout=30) as response:
            for headers, _ in parts(response):
                fast.append(int(headers["x-frame-index"]))

    def watch_slow() -> None:
        # Reads about 400 KB/s through a small socket buffer: a quarter of what the stream needs.
        wait_for(port)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: test\r\n\r\n")
            buf = b""
            while not finished.is_set():
                data = sock.recv(8192)
                if not data:
                    return
                buf += data
                matches = list(re.finditer(rb"X-Frame-Index: (\d+)\r\n", buf))
                slow.extend(int(m.group(1)) for m in matches)
                buf = buf[matches[-1].end():] if matches else buf
                buf = buf[-64:]  # only a header cut in half needs keeping
                time.sleep(0.02)

    def stall() -> None:
        wait_for(port)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: test\r\n\r\n")  # then never reads

    threads = [threading.Thread(target=f, daemon=True) for f in (watch_fast, watch_slow, stall)]
    for t in threads:
        t.start()
    try:
        report, out, runtime = run_pipeline(
            ["-s", "testpattern", "-c", "testpattern-width=1280", "-c", "testpattern-height=720",
             "-c", "testpattern-fps=40", "--max-frames", "160", "-o", f"http://127.0.0.1:{port}/"])
    finally:
        finished.set()
        stalled.close()
    for t in threads:
        t.join(10)
    assert report["frames"] == 160 and len(out.frames) == 160  # the loop ran to the end
    assert len(fast) > 40 and fast[-1] >= 100  # the fast viewer kept up with the stream
    gaps = [b - a for a, b in zip(slow, slow[1:], strict=False)]
    assert len(slow) >= 5 and max(gaps) > 1  # the slow viewer skipped frames instead of queueing them
    assert slow[-1] >= 100  # ... so it stayed near the live edge
    output = runtime.outputs[0][1]
    assert isinstance(output, MjpegOutput)
    assert output.frames_encoded <= 160


def wait_for(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)


# -- start and stop ----------------------------------------------------------------------------


def test_port_in_use_is_an_output_error_naming_the_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = Server(port=port)
        try:
            with pytest.raises(OutputError, match=rf"port {port} .*already in use"):
                server.output.start()
        finally:
            server.close()
        result = run_cli(["run", "-s", "testpattern", "-o", f"http://127.0.0.1:{port}/", "--max-frames", "5"])
        assert result.returncode == 1
        assert f"port {port}" in result.stderr and "Traceback" not in result.stderr


def test_close_ends_streams_and_frees_the_port(serve: Callable[..., Server]) -> None:
    server = serve()
    server.output.write(pattern(1))
    port = server.output.port
    ended = threading.Event()

    def watch() -> None:
        with httpx.stream("GET", server.base + "stream.mjpg", timeout=30) as response:
            for _ in parts(response):
                pass
        ended.set()

    threading.Thread(target=watch, daemon=True).start()
    wait_until(lambda: server.output.viewers == 1)
    server.output.close()
    assert ended.wait(10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # raises if the port were still held


def test_target_url_and_options() -> None:
    _, _, runtime = run_pipeline(["-s", "testpattern", "--max-frames", "1", "-o", "http://127.0.0.1:0/view/"])
    output = runtime.outputs[0][1]
    assert isinstance(output, MjpegOutput)
    assert (output.options.host, output.options.path) == ("127.0.0.1", "/view/")
    with pytest.raises(ConfigError, match="the URL gives port 9999 but -c mjpeg-port gives 8081"):
        run_pipeline(["-s", "testpattern", "-c", "mjpeg-port=8081", "-o", "http://127.0.0.1:9999/"])
    with pytest.raises(ConfigError, match="mjpeg-path"):
        run_pipeline(["-s", "testpattern", "-c", "mjpeg-path=cam", "-o", "mjpeg"])
    with pytest.raises(ConfigError, match="mjpeg-quality"):
        run_pipeline(["-s", "testpattern", "-c", "mjpeg-quality=0", "-o", "mjpeg"])


# -- a real browser ----------------------------------------------------------------------------


def test_page_shows_the_live_stream_in_chromium(serve: Callable[..., Server]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    server = serve()
    stop = threading.Event()
    feed(server.output, stop, fps=30)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--headless", "--no-sandbox", "--disable-gpu",
                                              "--disable-dev-shm-usage"])
            try:
                page = browser.new_page()
                page.goto(server.base, wait_until="domcontentloaded")
                page.wait_for_function("document.getElementById('video').naturalWidth > 0", timeout=15000)
                assert page.evaluate("document.getElementById('video').naturalWidth") == 320
                first = page.locator("#video").screenshot()
                time.sleep(0.5)
                second = page.locator("#video").screenshot()
                assert first != second  # the picture moves
                assert page.text_content("#status") == "live"
            finally:
                browser.close()
    finally:
        stop.set()
    assert server.output.frames_sent > 5
