"""Issue 10 for the mjpeg output: loopback by default, the API key on every path, one warning when exposed."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from framelens import Context, Frame
from framelens.plugins.outputs import mjpeg
from framelens.plugins.outputs.mjpeg import MjpegOptions, MjpegOutput
from framelens.registry import Registry


@contextlib.contextmanager
def _output(namespaces: dict[str, dict[str, str]] | None = None, **options: object) -> Iterator[MjpegOutput]:
    context = Context(Registry(), namespaces=namespaces or {})
    context.runner.start()
    output = MjpegOutput(MjpegOptions(**{"port": 0, **options}), context)
    output.start()
    output.write(Frame(np.full((48, 64, 3), 90, np.uint8), 0, time.time(), "main"))
    try:
        yield output
    finally:
        output.close()
        context.close()


def test_the_default_address_is_loopback() -> None:
    assert MjpegOptions().host == "127.0.0.1"


@pytest.mark.parametrize("source", ["own", "http", "env"])
def test_every_path_wants_the_key_by_header_or_query(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spaces: dict[str, dict[str, str]] = {}
    options: dict[str, object] = {}
    if source == "own":
        options["api_key"] = "k3y"
    elif source == "http":
        spaces["http"] = {"api_key": "k3y"}  # the http service's key covers the video too
    else:
        monkeypatch.setenv("FRAMELENS_API_KEY", "k3y")
    with _output(spaces, **options) as output:
        base = f"http://127.0.0.1:{output.port}/"
        for path in ("", "snapshot.jpg", "stream.mjpg"):
            refused = httpx.get(base + path, timeout=5)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "API key" in refused.text
            assert httpx.get(base + path + "?key=wrong", timeout=5).status_code == 401
        snap = httpx.get(base + "snapshot.jpg", headers={"Authorization": "Bearer k3y"}, timeout=5)
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8"
        assert httpx.get(base + "snapshot.jpg?key=k3y", timeout=5).status_code == 200
        with httpx.stream("GET", base + "stream.mjpg?key=k3y", timeout=5) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("multipart/x-mixed-replace")
        page = httpx.get(base + "?key=k3y", timeout=5)
        assert page.status_code == 200 and "stream.mjpg" in page.text


def test_serving_other_machines_without_a_key_warns_once(caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMELENS_API_KEY", raising=False)
    monkeypatch.setattr(mjpeg, "_warned", set())
    caplog.set_level(logging.WARNING, "framelens.mjpeg")
    with _output(host="0.0.0.0"):
        pass
    with _output(host="0.0.0.0"):
        pass
    warnings = [r.getMessage() for r in caplog.records if "to anyone who can reach it" in r.getMessage()]
    assert len(warnings) == 1 and "mjpeg-api-key" in warnings[0]
    caplog.clear()
    monkeypatch.setattr(mjpeg, "_warned", set())
    with _output(host="0.0.0.0", api_key="k"):
        pass
    with _output():
        pass
    assert not [r for r in caplog.records if "to anyone" in r.getMessage()]


def test_the_page_opened_with_the_key_shows_the_stream_in_chromium() -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with _output(api_key="k3y") as output:
        stop = threading.Event()

        def feed() -> None:
            index = 1
            while not stop.wait(1 / 30):
                output.write(Frame(np.full((48, 64, 3), index % 255, np.uint8), index, time.time(), "main"))
                index += 1

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{output.port}/?key=k3y", wait_until="domcontentloaded")
                page.wait_for_function("document.getElementById('video').naturalWidth > 0", timeout=15000)
                assert page.evaluate("document.getElementById('video').naturalWidth") == 64
                assert page.get_attribute("#snap", "href") == "snapshot.jpg?key=k3y"
            finally:
                browser.close()
                stop.set()
                feeder.join(2)
