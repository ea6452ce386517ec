"""The dashboard's HTTP side, read by real clients: /v1/events, live views, login, switching it off."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from dashboard_service import DESCRIBE_ERROR, Service
from helpers import free_port, run_cli

from framelens import (
    ConfigError,
    Context,
    Options,
    Pipeline,
    RegisterPluginOptions,
    Site,
    hookimpl,
)
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.dashboard.events import EventFilter, EventHub
from framelens.registry import Registry
from framelens.testing import plugin_registered

pytestmark = pytest.mark.timeout(60)


def sse(url: str, *, headers: dict[str, str] | None = None, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Read ``count`` SSE messages (id, event, data) from ``url``, strictly."""
    out: list[dict[str, Any]] = []
    with httpx.stream("GET", url, headers=headers or {}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, Any] = {}
        for line in response.iter_lines():
            if line == "":
                if "event" in block:
                    out.append(block)
                    if len(out) == count:
                        return out
                block = {}
            elif line.startswith("id: "):
                block["id"] = int(line[4:])
            elif line.startswith("event: "):
                block["event"] = line[7:]
            elif line.startswith("data: "):
                block["data"] = json.loads(line[6:])
    return out


def test_events_stream_every_bus_event_with_filters_and_replay(service: Callable[..., Service]) -> None:
    svc = service()
    every = sse(svc.base + "/v1/events?last_event_id=0&type=run,source,description", count=4)
    assert [m["event"] for m in every][:2] == ["run", "source"]
    assert all(m["data"]["id"] == m["id"] and m["data"]["type"] == m["event"] for m in every)
    assert [m["id"] for m in every] == sorted(m["id"] for m in every)
    assert every[1]["data"]["source"] == "main" and every[1]["data"]["payload"]["state"] == "connected"

    descriptions = sse(svc.base + "/v1/events?type=description&stream=main", count=2, timeout=15)
    assert [m["event"] for m in descriptions] == ["description", "description"]
    texts = [m["data"]["payload"]["text"] for m in descriptions]
    assert texts[0] != texts[1] and all(t.startswith("A test pattern, description number") for t in texts)
    partial = sse(svc.base + "/v1/events?type=description.partial", count=1, timeout=15)[0]
    assert partial["data"]["payload"]["partial"] is True
    assert "id" not in partial and "id" not in partial["data"]  # transient: not kept, not replayed

    # Reconnecting with Last-Event-ID gives what came after it, in order, nothing twice.
    last = descriptions[0]["id"]
    replay = sse(svc.base + "/v1/events?type=description", headers={"Last-Event-ID": str(last)}, count=1)
    assert replay[0]["id"] == descriptions[1]["id"]
    with pytest.raises(httpx.ReadTimeout):  # the kept run and source events are all of stream main
        sse(svc.base + "/v1/events?stream=nope&type=run,source&last_event_id=0", count=1, timeout=1.5)
    both = sse(svc.base + "/v1/events?stream=main&type=run,source&last_event_id=0", count=1)
    assert both[0]["event"] == "source"  # the run event has no source, so a stream filter leaves it out

    bad = httpx.get(svc.base + "/v1/events?last_event_id=soon")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "last_event_id"


def test_a_client_that_falls_behind_reconnects_without_losing_events() -> None:
    context = Context(Registry())

    async def scenario() -> tuple[list[str], list[str]]:
        hub = EventHub(context, asyncio.get_running_loop(), history=100, client_queue=5)
        hub.attach()
        stream = hub.stream(EventFilter(), last_event_id=None)
        assert await stream.__anext__() == "retry: 2000\n\n"
        reader = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)
        for i in range(12):  # published faster than the client reads
            context.events.publish("tick", {"n": i})
        await asyncio.sleep(0.05)
        first = [await reader]
        async for message in stream:
            first.append(message)
        # The stream ended instead of skipping events; a reconnect resumes after the last one it got.
        last_id = int(first[-1].split("\n")[0].removeprefix("id: "))
        again = hub.stream(EventFilter(), last_event_id=last_id)
        rest = [await again.__anext__() for _ in range(1 + 12 - len(first))][1:]
        await again.aclose()
        hub.close()
        return first, rest

    first, rest = asyncio.run(scenario())
    numbers = [json.loads(m.split("data: ", 1)[1])["payload"]["n"] for m in first + rest]
    assert len(first) < 12 and numbers == list(range(12))


def test_live_view_is_mjpeg_and_names_unknown_streams(service: Callable[..., Service]) -> None:
    svc = service()
    with httpx.stream("GET", svc.base + "/dashboard/api/streams/main/mjpeg", timeout=10) as response:
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            if data.count(b"--frame\r\n") >= 3:
                break
    parts = data.split(b"--frame\r\n")[1:3]
    indexes = [int(p.split(b"X-Frame-Index: ")[1].split(b"\r\n")[0]) for p in parts]
    assert indexes[0] < indexes[1]
    assert all(b"\r\n\r\n\xff\xd8" in p for p in parts)  # a JPEG after each part's headers
    missing = httpx.get(svc.base + "/dashboard/api/streams/cam9/mjpeg")
    assert missing.status_code == 404 and "cam9" in missing.json()["error"]["message"]
    assert "main" in missing.json()["error"]["message"]
    snap = httpx.get(svc.base + "/dashboard/api/snapshots/alert-x.jpg")
    assert snap.status_code == 404 and snap.json()["error"]["code"] == "snapshot_not_found"
    paths = httpx.get(svc.base + "/openapi.json").json()["paths"]
    assert "/v1/events" in paths and "/dashboard/api/status" in paths


def test_login_trades_the_key_for_a_cookie(service: Callable[..., Service]) -> None:
    svc = service(api_key="k-123")
    assert httpx.get(svc.base + "/dashboard/api/session").json() == {"auth_required": True, "session": False}
    wrong = httpx.post(svc.base + "/dashboard/api/login", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    ok = httpx.post(svc.base + "/dashboard/api/login", headers={"Authorization": "Bearer k-123"})
    assert ok.status_code == 200
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    jar = {"Cookie": f"framelens_session={token}"}
    assert len(sse(svc.base + "/v1/events?last_event_id=0", headers=jar, count=2)) == 2
    assert httpx.get(svc.base + "/dashboard/api/status", headers=jar).json()["backend"] == "fake"
    assert httpx.get(svc.base + "/dashboard/api/session", headers=jar).json()["session"] is True
    # A bearer header that is wrong is refused even with a good cookie: the header is what was sent.
    assert httpx.get(svc.base + "/v1/alerts", headers={**jar, "Authorization": "Bearer nope"}).status_code == 401
    # The page and its files are public (they hold no data); everything else is not.
    assert httpx.get(svc.base + "/").status_code == 200
    assert httpx.get(svc.base + "/dashboard/app.js").headers["content-type"].startswith("text/javascript")
    out = httpx.post(svc.base + "/dashboard/api/logout", headers=jar)
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert httpx.get(svc.base + "/dashboard/api/status", headers=jar).status_code == 401


def test_disabled_dashboard_leaves_the_plain_page(service: Callable[..., Service]) -> None:
    svc = service(extra={"dashboard-enabled": False})
    page = httpx.get(svc.base + "/")
    assert page.status_code == 200 and "<title>framelens: live sources</title>" in page.text
    assert httpx.get(svc.base + "/v1/events").status_code == 404
    assert httpx.get(svc.base + "/dashboard/app.js").status_code == 404


@pytest.mark.parametrize(("setting", "message"), [
    ({"dashboard-enabled": "maybe"}, "dashboard-enabled"),
    ({"dashboard-max-fps": 0}, "dashboard-max-fps"),
    ({"dashboard-colour": "red"}, "unknown option 'dashboard-colour'"),
])
def test_bad_dashboard_options_stop_the_run_before_it_starts(setting: dict[str, Any], message: str) -> None:
    pipeline = Pipeline("testpattern", ["http"], ["none"], options={"http-port": 1, **setting})
    with pytest.raises(ConfigError, match=message):
        pipeline.build()


def test_dashboard_options_on_the_command_line() -> None:
    started = time.monotonic()
    bad = run_cli(["run", "-s", "testpattern", "-p", "http", "-o", "none", "-c", "dashboard-enabled=maybe"])
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "dashboard-enabled" in bad.stderr, bad.stderr
    typo = run_cli(["run", "-s", "testpattern", "-o", "none", "-c", "dashbord-enabled=false"])
    assert typo.returncode == 2 and "dashboard-enabled" in typo.stderr  # the suggestion
    assert time.monotonic() - started < 30


def test_status_reports_backend_errors_in_the_words_of_the_log(service: Callable[..., Service]) -> None:
    svc = service(describe_fails=True)
    deadline = time.monotonic() + 10
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = httpx.get(svc.base + "/dashboard/api/status").json()
        if doc["errors"]:
            break
        time.sleep(0.2)
    assert [(e["level"], e["message"]) for e in doc["errors"]] == [("error", f"describe: {DESCRIBE_ERROR}")]
    assert doc["health"] == {"ready": True, "detail": "ready"} and doc["model"] == "fake-1"
    assert doc["in_flight"] == {"running": 0.0, "waiting": 0.0, "requests": doc["in_flight"]["requests"]}
    assert [s["id"] for s in doc["streams"]] == ["main"] and doc["streams"][0]["state"] == "live"
    failed = sse(svc.base + "/v1/events?type=describer&last_event_id=0", count=1)[0]["data"]["payload"]
    assert failed["state"] == "error" and failed["message"] == DESCRIBE_ERROR


class _Clashing:
    """A plugin that wants the option namespace of a backend and the dashboard's."""

    @hookimpl
    def register_plugin_options(self, register: RegisterPluginOptions) -> None:
        register("ollama", Options)
        register("dashboard", Options)


def test_an_option_namespace_that_is_taken_is_reported_not_shadowed() -> None:
    with plugin_registered(_Clashing(), "clashing"):
        registry = get_plugin_manager().registry
        problems = [p for p in registry.problems if "clashing" in p]
        assert any("'ollama'" in p and "taken by vlm" in p for p in problems), problems
        assert any("'dashboard'" in p and "taken by dashboard" in p for p in problems), problems
        assert registry.plugin_options["dashboard"].plugin == "dashboard"
        assert "ollama" not in registry.plugin_options


# -- per-camera pipeline numbers: the status API reads the series /metrics exports -------------


def _series(metrics: str, name: str, source: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(f'{name}{{source="{source}"}} '))
    return float(line.split()[-1])


def _status_streams(base: str, wait: float = 0.0) -> dict[str, Any]:
    if wait:
        time.sleep(wait)
    doc = httpx.get(base + "/dashboard/api/status", timeout=10).json()
    return {s["id"]: s for s in doc["streams"]}


def test_status_gives_each_stream_its_pipeline_numbers_from_the_metrics(service: Callable[..., Service]) -> None:
    svc = service()
    context = svc.context
    # A stream opened as a request would open it: live, but no pipeline processes it.
    svc.add_stream("cam2")
    _status_streams(svc.base, wait=0.5)  # the first call starts the window
    streams = _status_streams(svc.base, wait=1.5)
    metrics = httpx.get(svc.base + "/metrics", timeout=10).text
    main = streams["main"]["pipeline"]
    assert set(main) == {"frames", "fps", "latency_ms"}
    assert 8 <= main["fps"] <= 17, main            # the test pattern's 15 fps, every frame processed
    assert 0 < main["latency_ms"] < 500, main      # capture to outputs: a cheap pipeline
    # The same numbers as /metrics (read a moment later, so at most a few frames more).
    frames = _series(metrics, "framelens_frames_total", "main")
    count = _series(metrics, "framelens_frame_latency_seconds_count", "main")
    total = _series(metrics, "framelens_frame_latency_seconds_sum", "main")
    assert main["frames"] <= frames <= main["frames"] + 15 and count == frames
    assert 0 < 1000 * total / count < 500
    assert streams["cam2"]["pipeline"] is None
    context.streams.remove("cam2")


def test_a_site_shows_each_cameras_own_rate_and_latency() -> None:
    port = free_port()
    pipeline = Pipeline(cameras={"door": {"source": "testpattern", "options": {"testpattern-fps": 15}},
                                 "garage": {"source": "testpattern", "options": {"testpattern-fps": 5}}},
                        processors=["http"], outputs=["none"],
                        options={"http-port": port, "testpattern-width": 160, "testpattern-height": 120})
    site = pipeline.build()
    assert isinstance(site, Site)
    runner = threading.Thread(target=site.run, daemon=True)
    runner.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if {"door", "garage"} <= set(_status_streams(base)):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        _status_streams(base, wait=0.5)
        streams = _status_streams(base, wait=2.0)
        metrics = httpx.get(base + "/metrics", timeout=10).text
        report = site.report()
    finally:
        site.stop()
        runner.join(20)
    door, garage = streams["door"]["pipeline"], streams["garage"]["pipeline"]
    assert 10 <= door["fps"] <= 17 and 3 <= garage["fps"] <= 6, (door, garage)
    assert 0 < door["latency_ms"] < 500 and 0 < garage["latency_ms"] < 500
    for camera in ("door", "garage"):  # /metrics, labelled by camera
        seen = streams[camera]["pipeline"]["frames"]
        assert _series(metrics, "framelens_frame_latency_seconds_count", camera) >= seen
    # --benchmark's per-camera report has the latency too (the same per-frame measurement).
    for camera in ("door", "garage"):
        assert set(report["cameras"][camera]["latency"]) == {"mean_ms", "p95_ms"}
        assert 0 < report["cameras"][camera]["latency"]["mean_ms"] < 500
