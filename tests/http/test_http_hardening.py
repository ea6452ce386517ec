"""Issue 10: no request freezes the service or reaches where it should not; faults are reported on time.

Real sockets on 127.0.0.1 play the hostile network: a tar pit that accepts and
never answers, a closed port, a server that does not speak RTSP, a FIFO.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _http_support import Running, echo_service, solid_png
from helpers import TarPit, free_port, tar_pit

from framelens import Source, SourceInfo, Stream
from framelens.capture import LiveCapture

pytestmark = pytest.mark.timeout(120)

PNG = "data:image/png;base64," + base64.b64encode(solid_png()).decode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat(running: Running, url: str, timeout: float = 30) -> httpx.Response:
    content = [{"type": "text", "text": "what is there?"}, {"type": "image_url", "image_url": {"url": url}}]
    return httpx.post(running.v1 + "/chat/completions", timeout=timeout,
                      json={"messages": [{"role": "user", "content": content}]})


def message(response: httpx.Response) -> str:
    body = response.json()
    error = body["error"]
    return str(error["message"] if isinstance(error, dict) else error)


# -- 1. opens never freeze the service ----------------------------------------------------------------


def test_health_models_and_data_uris_answer_while_20_dead_camera_requests_are_in_flight() -> None:
    http = {"allow-private-urls": True, "max-opens": 20, "max-opens-per-client": 20, "open-timeout": 4}
    with tar_pit() as pit, echo_service(http, namespaces={"rtsp": {"open_timeout": 3}}) as (running, _), \
            concurrent.futures.ThreadPoolExecutor(24) as pool:
        started = time.monotonic()
        dead = [pool.submit(chat, running, f"rtsp://127.0.0.1:{pit.port}/cam{i}") for i in range(20)]
        deadline = time.monotonic() + 10
        while len(pit.accepted) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Opens of different cameras run at once: every camera was dialled within a second.
        assert len(pit.accepted) >= 20 and pit.accepted[19] - started < 3.0, pit.accepted
        with httpx.Client(timeout=5) as client:
            for path in ("/health", "/v1/models", "/health", "/v1/models", "/health"):
                t0 = time.monotonic()
                assert client.get(running.url + path).status_code == 200
                assert time.monotonic() - t0 < 0.1, f"{path} took {time.monotonic() - t0:.3f} s"
            t0 = time.monotonic()
            assert chat(running, PNG).status_code == 200
            assert time.monotonic() - t0 < 1.0
        answers = [f.result() for f in dead]
        elapsed = time.monotonic() - started
    assert {a.status_code for a in answers} == {422}
    assert elapsed < 4 + 2.5  # the open timeout, not 20 opens one after the other
    texts = {re.sub(r"cam\d+", "cam", message(a)) for a in answers}
    assert len(texts) == 1 and "could not open the live source" in texts.pop()


def test_opens_beyond_the_bound_per_client_get_429_with_retry_after() -> None:
    http = {"allow-private-urls": True, "open-timeout": 2, "max-opens-per-client": 2}
    with tar_pit() as pit, echo_service(http, namespaces={"rtsp": {"open_timeout": 5}}) as (running, _), \
            concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = [pool.submit(chat, running, f"rtsp://127.0.0.1:{pit.port}/a{i}") for i in range(2)]
        deadline = time.monotonic() + 5
        while len(pit.accepted) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        third = chat(running, f"rtsp://127.0.0.1:{pit.port}/a3")
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) >= 1
        assert "per client" in message(third)
        assert [f.result().status_code for f in first] == [422, 422]


def test_two_requests_for_the_same_camera_share_one_open() -> None:
    http = {"allow-private-urls": True, "open-timeout": 2}
    with tar_pit() as pit, echo_service(http, namespaces={"rtsp": {"open_timeout": 1.5}}) as (running, _), \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        url = f"rtsp://127.0.0.1:{pit.port}/same"
        started = time.monotonic()
        answers = [f.result() for f in [pool.submit(chat, running, url) for _ in range(2)]]
    # One FFmpeg connection for both requests (a second one later is the DESCRIBE that names the reason).
    assert len([t for t in pit.accepted if t - started < 1.2]) == 1, pit.accepted
    assert [a.status_code for a in answers] == [422, 422]


@pytest.mark.parametrize("rtsp_timeout", [5.0, 30.0])
def test_the_open_timeout_holds_whatever_the_source_would_wait(rtsp_timeout: float) -> None:
    with tar_pit() as pit, echo_service({"allow-private-urls": True, "open-timeout": 1},
                                        namespaces={"rtsp": {"open_timeout": rtsp_timeout}}) as (running, _):
        t0 = time.monotonic()
        answer = chat(running, f"rtsp://127.0.0.1:{pit.port}/x")
        took = time.monotonic() - t0
        listed = httpx.get(running.v1 + "/streams").json()["data"]
    assert answer.status_code == 422 and took < 2.0, took
    assert listed == []  # nothing half-open is left behind


# -- 2. one address policy for every scheme -----------------------------------------------------------

LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "0x7f.0.0.1", "0x7f.1", "0x7f000001", "2130706433", "0177.0.0.1",
                      "017700000001", "127.000.000.001", "localhost", "LOCALHOST", "[::1]", "[0:0:0:0:0:0:0:1]",
                      "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::ffff:0:7f00:1]", "[64:ff9b::7f00:1]",
                      "[2002:7f00:1::]", "0.0.0.0", "0", "[::]"]
PRIVATE_SPELLINGS = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "[fe80::1]",
                     "[fc00::1]", "224.0.0.1", "255.255.255.255"]


@pytest.fixture(scope="module")
def guarded() -> Iterator[tuple[Running, TarPit]]:
    with tar_pit() as pit, echo_service({"open-timeout": 3}) as (running, _):
        yield running, pit


def _send(running: Running, route: str, url: str) -> httpx.Response:
    if route == "chat":
        return chat(running, url)
    if route == "streams":
        return httpx.post(running.v1 + "/streams", json={"url": url}, timeout=30)
    if route == "jps":
        return httpx.post(running.url + "/api/v1/live-stream", json={"liveStreamUrl": url}, timeout=30)
    if route == "generate":
        return httpx.post(running.url + "/api/generate", timeout=30,
                          json={"model": "echo-1", "prompt": "x", "images": [url], "stream": False})
    return httpx.post(running.url + "/infer", json={"prompt": "x", "image": url}, timeout=30)


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + PRIVATE_SPELLINGS)
@pytest.mark.parametrize(("scheme", "route"), [
    ("rtsp", "chat"), ("rtsps", "chat"), ("http", "chat"), ("https", "chat"), ("rtsp", "streams"),
    ("rtsps", "streams"), ("rtsp", "jps"), ("rtsp", "generate"), ("rtsps", "infer"),
])
def test_every_spelling_of_a_private_address_is_refused_before_connecting(
        guarded: tuple[Running, TarPit], host: str, scheme: str, route: str) -> None:
    running, pit = guarded
    before = len(pit.accepted)
    answer = _send(running, route, f"{scheme}://{host}:{pit.port}/cam")
    assert answer.status_code == 403, answer.text
    assert "non-public address" in message(answer) and "http-allow-private-urls" in message(answer)
    assert len(pit.accepted) == before  # never dialled


def test_could_not_open_is_one_answer_whatever_the_network_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "framelens.http")
    with tar_pit() as pit, tar_pit(reply=b"SSH-2.0-OpenSSH_9.2\r\n") as ssh, \
            echo_service({"allow-private-urls": True, "open-timeout": 3},
                         namespaces={"rtsp": {"open_timeout": 1}}) as (running, _):
        urls = {"refused": f"rtsp://127.0.0.1:{closed_port()}/x", "silent": f"rtsp://127.0.0.1:{pit.port}/x",
                "not rtsp": f"rtsp://127.0.0.1:{ssh.port}/x", "no such host": "rtsp://no-such-host.invalid/x"}
        answers = {what: chat(running, url) for what, url in urls.items()}
    bodies = {what: message(a).replace(urls[what], "URL") for what, a in answers.items()}
    assert {a.status_code for a in answers.values()} == {422}
    assert len(set(bodies.values())) == 1, bodies
    text = next(iter(bodies.values()))
    for probe_detail in ("refused (", "did not answer within", "does not speak RTSP", "resolve"):
        assert probe_detail not in text
    # The operator still learns why, from the server log.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection refused" in logged and "does not speak RTSP" in logged


def test_v4l2_paths_get_one_answer_whether_or_not_the_file_exists(tmp_path: Path) -> None:
    with echo_service() as (running, _):
        answers = [chat(running, f"v4l2://{path}") for path in (
            "/etc/passwd", "/nope", "/dev/../etc/passwd", "/proc/self/environ", "/dev/null", str(tmp_path),
            "/dev/video0/../../etc/passwd", "/dev/v4l/../../etc/passwd")]
        missing = chat(running, "v4l2:///dev/video97")
    assert {a.status_code for a in answers} == {400}
    assert len({a.text.split('"request_id"')[0] for a in answers}) == 1
    assert "must name a video device" in message(answers[0])
    assert missing.status_code == 422 and "could not open the live source" in message(missing)


# -- 3-4. files and malformed hosts ---------------------------------------------------------------


def test_a_fifo_in_an_allowed_folder_is_refused_at_once_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "ok.png").write_bytes(solid_png())
    with echo_service({"allowed-file-dirs": str(tmp_path)}) as (running, _), \
            concurrent.futures.ThreadPoolExecutor(8) as pool:
        t0 = time.monotonic()
        answers = [f.result() for f in [pool.submit(chat, running, f"file://{fifo}") for _ in range(8)]]
        took = time.monotonic() - t0
        assert chat(running, f"file://{tmp_path / 'ok.png'}").status_code == 200
        assert httpx.get(running.url + "/health", timeout=5).status_code == 200
    assert {a.status_code for a in answers} == {400} and took < 3.0
    assert "not a regular file" in message(answers[0])


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(solid_png() + b"\0" * 4096)
    with echo_service({"allowed-file-dirs": str(tmp_path), "max-image-bytes": 2048}) as (running, _):
        answer = chat(running, f"file://{big}")
    assert answer.status_code == 413 and "larger than 2048 bytes" in message(answer)


@pytest.mark.parametrize("url", ["http://" + "a" * 64 + ".example/x.png", "https://a..b/x.png",
                                 "rtsp://" + "b" * 64 + ".example/x", "rtsps://xn--ls8h" + "a" * 70 + "/x"])
def test_a_host_that_is_not_a_valid_name_is_a_400(url: str) -> None:
    with echo_service({"allow-private-urls": True}) as (running, _):
        answer = chat(running, url)
    assert 400 <= answer.status_code < 500 and answer.status_code != 403, answer.text


# -- 6. deep JSON and strict numbers ----------------------------------------------------------------


def test_deeply_nested_json_is_a_400_on_every_route() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with echo_service() as (running, _):
        document = httpx.get(running.url + "/openapi.json").json()
        posts = sorted(p for p, ops in document["paths"].items() if "post" in ops and "{" not in p)
        assert "/v1/chat/completions" in posts and "/infer" in posts
        answers = {p: httpx.post(running.url + p, content=deep, headers={"content-type": "application/json"},
                                 timeout=30) for p in posts}
    assert {p: a.status_code for p, a in answers.items() if a.status_code != 400} == {}


def test_deeply_nested_json_is_a_400_on_the_alerts_routes_too() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "framelens", "run", "-s", "testpattern", "-p", "alerts",
                             "-p", "http", "-c", f"http-port={port}", "-c", "ollama-url=http://127.0.0.1:1",
                             "-o", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "framelens did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/v1/alerts", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        deep = "[" * 100_000 + "]" * 100_000
        answer = httpx.post(base + "/v1/alerts", content=deep, headers={"content-type": "application/json"},
                            timeout=30)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json", answer.text
        assert httpx.get(base + "/v1/alerts", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err and "RecursionError" not in err


@pytest.mark.parametrize("value", [10**30, "12", True, 1.5, 0, 32769])
def test_max_tokens_is_a_strict_bounded_integer_on_chat(value: Any) -> None:
    with echo_service() as (running, _):
        answer = httpx.post(running.v1 + "/chat/completions", timeout=10, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": value})
        ok = httpx.post(running.v1 + "/chat/completions", timeout=10, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32768})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "max_tokens", answer.text
    assert ok.status_code == 200


@pytest.mark.parametrize(("field", "value"), [("stream", "yes"), ("temperature", "0.5"), ("seed", True),
                                              ("logprobs", 1)])
def test_numbers_and_booleans_are_not_coerced(field: str, value: Any) -> None:
    with echo_service() as (running, _):
        answer = httpx.post(running.v1 + "/chat/completions", timeout=10, json={
            "messages": [{"role": "user", "content": "hi"}], field: value})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == field


@pytest.mark.parametrize("value", [1.5, 10**6, "8", True])
def test_num_predict_is_checked_on_generate(value: Any) -> None:
    with echo_service() as (running, _):
        answer = httpx.post(running.url + "/api/generate", timeout=10, json={
            "model": "echo-1", "prompt": "hi", "stream": False, "options": {"num_predict": value}})
        fine = httpx.post(running.url + "/api/generate", timeout=10, json={
            "model": "echo-1", "prompt": "hi", "stream": False, "options": {"num_predict": 32768}})
    assert answer.status_code == 400 and "num_predict" in answer.json()["error"], answer.text
    assert fine.status_code == 200


# -- 9. a stream that stops delivering ----------------------------------------------------------------


class Valve(Source):
    """A live source whose frames stop while ``open`` is cleared (its read then blocks, like a frozen camera)."""

    live = True
    reconnect = True

    def __init__(self) -> None:
        super().__init__("valve")
        self.flowing = threading.Event()
        self.flowing.set()
        self.index = 0

    def open(self) -> SourceInfo:
        return SourceInfo(64, 48, 30.0)

    def read(self) -> np.ndarray | None:
        while not self.flowing.wait(0.05):
            pass
        time.sleep(1 / 30)
        self.index += 1
        return np.full((48, 64, 3), self.index % 255, np.uint8)

    def close(self) -> None:
        pass


def test_a_stalled_stream_is_stale_at_once_then_lost_once_and_never_serves_an_old_frame_silently() -> None:
    with echo_service() as (running, _):
        context = running.context
        lost: list[dict[str, Any]] = []
        context.events.subscribe(lambda e: lost.append(e.payload) if e.type == "source"
                                 and e.payload.get("state") == "lost" else None)
        valve = Valve()
        capture = LiveCapture(valve, "valve", context.events, read_timeout=2.0, backoff=0.1)
        capture.start(wait_open=True)
        context.streams.add(Stream("valve", "valve://", capture, origin="api", opened_at=time.time()))
        frame_url = running.v1 + "/streams/valve/frame.jpg"
        time.sleep(0.3)
        assert httpx.get(frame_url, timeout=5).status_code == 200
        valve.flowing.clear()
        stopped = time.monotonic()
        while httpx.get(running.v1 + "/streams/valve", timeout=5).json()["state"] != "stale":
            assert time.monotonic() - stopped < 2.0, "not stale within 2 s"
            time.sleep(0.05)
        stale = httpx.get(frame_url, timeout=5)
        assert stale.status_code == 503 and "stale" in message(stale) and stale.headers["retry-after"]
        old = httpx.get(frame_url + "?allow_stale=true", timeout=5)
        assert old.status_code == 200 and old.content[:2] == b"\xff\xd8"
        assert float(old.headers["x-frame-age"]) >= 0.9
        assert chat(running, "stream://valve").status_code == 503
        while not lost:
            assert time.monotonic() - stopped < 3.0, "not lost within the 2 s read timeout"
            time.sleep(0.05)
        detected = time.monotonic() - stopped
        time.sleep(1.0)
        assert len(lost) == 1, lost  # one outage, one event
        valve.flowing.set()
        while httpx.get(running.v1 + "/streams/valve", timeout=5).json()["state"] != "live":
            assert time.monotonic() - stopped < 10, "did not recover"
            time.sleep(0.05)
        assert httpx.get(frame_url, timeout=5).status_code == 200
        assert httpx.get(frame_url + "?allow_stale=maybe", timeout=5).status_code == 400
    assert 1.9 < detected < 2.6, detected
