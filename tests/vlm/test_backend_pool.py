"""Backend pools: least-loaded routing, a server that dies and comes back under load, /metrics.

Several FakeOpenAI servers on 127.0.0.1 behind one ``openai`` backend built the
way a run builds it (``-c openai-url=A,B,C``), driven by concurrent callers like
several cameras and API clients at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeOpenAI
from prometheus_client import generate_latest

from framelens import BackendError, ChatMessage, Context, GenerationParams
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.vlm.openai import OpenAICompatBackend

PATH = "/v1/chat/completions"
HELLO = [ChatMessage("user", "Hello?")]


@pytest.fixture(autouse=True)
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NVIDIA_API_KEY", "NGC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def context() -> Iterator[Context]:
    ctx = Context(get_plugin_manager().registry, namespaces={})
    try:
        yield ctx
    finally:
        ctx.close()


def pool_backend(context: Context, servers: list[FakeOpenAI], **options: str) -> OpenAICompatBackend:
    context._namespaces["openai"] = {"url": ",".join(s.base_url for s in servers), "model": "m", **options}
    backend = context.backend("openai")
    assert isinstance(backend, OpenAICompatBackend)
    return backend


def gauge(context: Context, name: str, server: FakeOpenAI) -> float:
    text = generate_latest(context.metrics).decode()
    match = re.search(rf'^{name}{{backend="openai",server="{re.escape(server.base_url)}"}} (\S+)$', text, re.M)
    assert match, f"{name} for {server.base_url} missing in:\n{text}"
    return float(match.group(1))


def test_requests_go_to_the_least_loaded_server(context: Context) -> None:
    with FakeOpenAI(models=["m"], delay=0.25) as slow, FakeOpenAI(models=["m"], delay=0.02) as fast:
        backend = pool_backend(context, [slow, fast], **{"max-in-flight": "8"})

        async def callers() -> None:
            async def one() -> None:
                for _ in range(6):
                    await backend.chat(HELLO, GenerationParams(max_tokens=4))
            await asyncio.gather(*(one() for _ in range(8)))

        context.runner.run(callers(), timeout=60)
        n_slow, n_fast = len(slow.requests_to(PATH)), len(fast.requests_to(PATH))
        assert n_slow + n_fast == 48
        # Round-robin would split 24/24; the fast server frees its slots ten times as often.
        assert n_fast >= 3 * n_slow, (n_slow, n_fast)
        assert slow.max_in_flight <= 8 and fast.max_in_flight <= 8
        assert gauge(context, "framelens_backend_server_requests_total", fast) == n_fast
        assert gauge(context, "framelens_backend_server_in_flight", slow) == 0


def test_a_full_pool_waits_for_a_slot_instead_of_failing(context: Context) -> None:
    with FakeOpenAI(models=["m"], delay=0.1) as a, FakeOpenAI(models=["m"], delay=0.1) as b:
        backend = pool_backend(context, [a, b], **{"max-in-flight": "2"})

        async def burst() -> list[Any]:
            return await asyncio.gather(*(backend.chat(HELLO, GenerationParams(max_tokens=4)) for _ in range(12)))

        results = context.runner.run(burst(), timeout=30)
        assert len(results) == 12 and all(r.text for r in results)
        assert a.max_in_flight <= 2 and b.max_in_flight <= 2
        assert len(a.requests_to(PATH)) == len(b.requests_to(PATH)) == 6


def test_a_server_that_dies_under_load_is_taken_out_probed_and_taken_back(
        context: Context, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="framelens.backend")
    servers = [FakeOpenAI(models=["m"], delay=0.05).start() for _ in range(3)]
    a, b, c = servers
    try:
        backend = pool_backend(context, servers, retries="2", timeout="10")
        outcomes: list[str] = []
        stop = threading.Event()
        issued = 0

        async def camera() -> None:
            nonlocal issued
            while not stop.is_set():
                issued += 1
                try:
                    await backend.chat(HELLO, GenerationParams(max_tokens=4))
                    outcomes.append("ok")
                except BackendError as exc:
                    outcomes.append(f"error: {exc}")

        async def load() -> None:
            await asyncio.gather(*(camera() for _ in range(12)))

        running = context.runner.submit(load())
        time.sleep(0.8)
        before = len(b.requests_to(PATH))
        assert before > 0
        b.stop()  # cuts the requests it is answering: they must go to a and c
        down_at = len(a.requests_to(PATH)) + len(c.requests_to(PATH))
        time.sleep(0.5)
        assert gauge(context, "framelens_backend_server_up", b) == 0
        assert gauge(context, "framelens_backend_server_up", a) == 1
        time.sleep(1.0)
        survivors = len(a.requests_to(PATH)) + len(c.requests_to(PATH)) - down_at
        assert survivors > 20, survivors  # the survivors took the load
        b.start()  # same port; the background probe finds it within its back-off (<= 2 s here)
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and gauge(context, "framelens_backend_server_up", b) == 0:
            time.sleep(0.05)
        assert gauge(context, "framelens_backend_server_up", b) == 1
        back_at = len(b.requests_to(PATH))
        time.sleep(0.7)
        stop.set()
        running.result(30)
        assert len(b.requests_to(PATH)) > back_at + 10  # it takes requests again
        # Nothing lost: every call came back, and with two survivors none failed.
        assert len(outcomes) == issued
        assert [o for o in outcomes if o != "ok"] == []
        served = sum(len(s.requests_to(PATH)) for s in servers)
        assert served >= issued  # the cut requests were sent again
        assert "is not reachable" in caplog.text and "answers again" in caplog.text
        assert gauge(context, "framelens_backend_server_errors_total", b) >= 1
    finally:
        for s in servers:
            s.stop()


def test_when_every_server_is_down_callers_get_an_error_naming_them(context: Context) -> None:
    a, b = FakeOpenAI(models=["m"]).start(), FakeOpenAI(models=["m"]).start()
    backend = pool_backend(context, [a, b], retries="1")
    a.stop()
    b.stop()

    async def many() -> list[BaseException | Any]:
        return await asyncio.gather(*(backend.chat(HELLO, GenerationParams(max_tokens=4)) for _ in range(5)),
                                    return_exceptions=True)

    results = context.runner.run(many(), timeout=30)
    assert len(results) == 5 and all(isinstance(r, BackendError) and r.kind == "unreachable" for r in results)
    assert any(a.base_url in str(r) for r in results)
    assert gauge(context, "framelens_backend_server_up", a) == 0 and gauge(context, "framelens_backend_server_up",
                                                                             b) == 0


def test_serve_exposes_per_server_health_and_load_in_metrics() -> None:
    import subprocess
    import sys

    import httpx
    from fakes import unused_url
    from helpers import free_port

    with FakeOpenAI(models=["m"]) as alive:
        dead, port = unused_url("/v1"), free_port()
        proc = subprocess.Popen([sys.executable, "-m", "framelens", "serve", "--port", str(port), "--backend",
                                 "openai", "-c", f"openai-url={alive.base_url},{dead}", "-c", "openai-model=m"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(api + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            for _ in range(4):
                r = httpx.post(api + "/v1/chat/completions", timeout=20,
                               json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text  # the dead server never costs a caller an error
            text = httpx.get(api + "/metrics").text
        finally:
            proc.terminate()
            proc.wait(10)

    def value(name: str, url: str) -> float:
        match = re.search(rf'^{name}{{backend="openai",server="{re.escape(url)}"}} (\S+)$', text, re.M)
        assert match, f"{name} {url} missing"
        return float(match.group(1))

    assert value("framelens_backend_server_up", alive.base_url) == 1
    assert value("framelens_backend_server_up", dead) == 0
    assert value("framelens_backend_server_errors_total", dead) >= 1
    assert value("framelens_backend_server_requests_total", alive.base_url) >= 4
    assert value("framelens_backend_server_in_flight", alive.base_url) == 0


def test_streams_cut_by_a_dying_server_end_in_an_error_never_in_silence(context: Context) -> None:
    a = FakeOpenAI(models=["m"], token_delay=0.05).start()
    b = FakeOpenAI(models=["m"], token_delay=0.05).start()
    try:
        backend = pool_backend(context, [a, b], retries="2", timeout="10")
        outcomes: list[str] = []

        async def one() -> None:
            text = ""
            try:
                async for chunk in backend.stream(HELLO, GenerationParams(max_tokens=16)):
                    text += chunk.text
                outcomes.append("complete" if text.endswith("today?") else f"short: {text!r}")
            except BackendError as exc:
                outcomes.append("error" if "dropped the connection" in str(exc) else f"other error: {exc}")

        async def load() -> None:
            await asyncio.gather(*(one() for _ in range(16)))
            await asyncio.gather(*(one() for _ in range(16)))  # after b died: all on a

        running = context.runner.submit(load())
        deadline = time.monotonic() + 10
        while len(b.requests_to(PATH)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        b.stop()  # mid-stream: each answer takes about 0.4 s
        running.result(30)
        assert len(outcomes) == 32
        assert set(outcomes) <= {"complete", "error"}, outcomes  # a cut stream is an error, never a short answer
        assert outcomes.count("complete") >= 16
        assert "error" in outcomes  # the streams b was sending were cut, and said so
    finally:
        a.stop()
        b.stop()
