"""Fault injection: the backend behind the API switched between ok, hang, 500, garbage, dropped and slow.

The backend is the real ``nim`` client talking to :class:`fakes.FakeOpenAI` over
HTTP; each fault is scripted on the fake for the next request only, and the
test asserts what the client of framelens sees (status, code, how long it
took), that the next request is served again (recovery), and that ``/health``
keeps answering within 100 ms while a request hangs.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import pytest
from _http_support import Running, running_service
from fakes import DROP, FakeOpenAI, Fault
from fakes.http import Reply

pytestmark = pytest.mark.timeout(120)

CHAT = {"messages": [{"role": "user", "content": "describe"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def nim() -> Iterator[tuple[FakeOpenAI, Running]]:
    with FakeOpenAI() as fake, running_service({"backend": "nim", "request-timeout": 1.5},
                                               {"nim": {"url": fake.base_url, "retries": 0}}) as running:
        yield fake, running


def _ask(running: Running, **extra: object) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    answer = httpx.post(running.v1 + "/chat/completions", json={**CHAT, **extra}, timeout=30)
    return answer, time.monotonic() - t0


def _recovered(running: Running) -> None:
    answer, took = _ask(running)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"], answer.text
    assert took < 1.0


PATH = "/v1/chat/completions"


@pytest.mark.parametrize(("fault", "status", "code"), [
    (Fault(PATH, Reply.json({"error": {"message": "boom", "type": "server_error"}}, 500)), 502, "backend_server"),
    (Fault(PATH, Reply.text("<html>502 Bad Gateway</html>", 200, "text/html")), 502, None),
    (Fault(PATH, Reply(200, {"Content-Type": "application/json"}, b'{"choices": [')), 502, None),
    # Twice: a drop on a reused keep-alive connection (the earlier cases leave one) is retried once by the
    # transport, on a fresh connection.
    (Fault(PATH, DROP, 2), 502, None),
])
def test_a_failing_backend_is_a_clean_5xx_and_the_next_request_is_served(
        nim: tuple[FakeOpenAI, Running], fault: Fault, status: int, code: str | None) -> None:
    fake, running = nim
    fake.add_fault(fault)
    answer, took = _ask(running)
    assert answer.status_code in (status, 503), answer.text
    error = answer.json()["error"]
    assert error["message"].startswith("nim") and "Traceback" not in answer.text
    if code is not None:
        assert error["code"] == code
    assert took < 1.0
    _recovered(running)


def test_a_hanging_backend_is_a_504_after_the_request_timeout_and_health_keeps_answering(
        nim: tuple[FakeOpenAI, Running]) -> None:
    fake, running = nim
    fake.add_fault(Fault(PATH, None, 1, 10.0))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(_ask, running)
        time.sleep(0.2)
        with httpx.Client(timeout=5) as client:
            for _ in range(5):
                t0 = time.monotonic()
                assert client.get(running.url + "/v1/health/live").status_code == 200
                assert time.monotonic() - t0 < 0.1
        answer, took = hanging.result()
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "backend_timeout"
    assert 1.4 < took < 3.0, took
    _recovered(running)


def test_a_slow_backend_is_waited_for(nim: tuple[FakeOpenAI, Running]) -> None:
    fake, running = nim
    fake.add_fault(Fault(PATH, None, 1, 0.6))
    answer, took = _ask(running)
    assert answer.status_code == 200 and 0.6 <= took < 1.4


def test_a_stream_dropped_midway_ends_with_an_error_event_not_a_hang(nim: tuple[FakeOpenAI, Running]) -> None:
    fake, running = nim

    async def half() -> object:
        yield b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":' \
              b'[{"index":0,"delta":{"role":"assistant","content":"a cat"},"finish_reason":null}]}\n\n'
        yield DROP

    fake.add_fault(Fault(PATH, Reply(200, {"Content-Type": "text/event-stream"}, stream=half())))  # type: ignore[arg-type]
    t0 = time.monotonic()
    with httpx.stream("POST", running.v1 + "/chat/completions", json={**CHAT, "stream": True}, timeout=30) as r:
        text = "".join(r.iter_text())
    assert r.status_code == 200 and time.monotonic() - t0 < 2.0
    assert "a cat" in text and '"error"' in text
    assert not text.rstrip().endswith('"finish_reason":"stop"}]}')
    _recovered(running)


def test_the_video_loop_keeps_its_rate_while_the_backend_cycles_through_faults() -> None:
    """A describer on a 30 fps live pattern while Ollama answers, 500s, hangs, drops, garbles, then slows."""
    from fakes import FakeOllama

    from framelens.testing import run_pipeline

    with FakeOllama() as ollama:
        chat = "/api/chat"
        ollama.fail_next(500, {"error": "model runner crashed"}, path=chat, times=3)
        ollama.add_fault(Fault(chat, None, 1, 1.5))  # a hang longer than the timeout below
        ollama.add_fault(Fault(chat, DROP, 2))
        ollama.add_fault(Fault(chat, Reply.text("<html>oops</html>", 200, "text/html"), 2))
        ollama.add_fault(Fault(chat, None, 3, 0.4))  # slow, then normal again
        t0 = time.monotonic()
        report, output, _ = run_pipeline([
            "-s", "testpattern", "--fps", "30", "--max-frames", "150", "-p", "ollama",
            "-c", f"ollama-url={ollama.url}", "-c", "ollama-timeout=1", "-c", "ollama-retries=0",
            "-c", "ollama-error-backoff=0.1", "-c", "ollama-stream=false", "-o", "none"])
        took = time.monotonic() - t0
        answered = ollama.requests_to(chat)
    frames = output.frames
    assert report["frames"] == 150 and len(frames) == 150
    assert report["fps"] >= 28.5, report  # the loop's own rate, whatever the backend did
    assert took < 150 / 30 + 2.0, took
    assert len(answered) >= 8  # every fault was met, and the describer kept asking
    last = frames[-1].results.get("ollama")
    assert last is not None and not getattr(last, "error", None), last
