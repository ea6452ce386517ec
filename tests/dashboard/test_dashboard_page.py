"""The dashboard in a real browser (headless system Chromium) against a running service."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_service import CHAT_ANSWER, Service

from framelens import Context

pytestmark = pytest.mark.timeout(90)


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page at ``url`` that records console errors and uncaught exceptions."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="domcontentloaded")
    return page, errors


def wait_live(page: Any) -> None:
    page.wait_for_function("document.getElementById('big').naturalWidth > 0", timeout=15000)


def test_live_view_and_descriptions(service: Callable[..., Service], browser: Any,
                                    shots: Callable[[Any, str], Path]) -> None:
    svc = service()
    page, errors = open_page(browser, svc.base + "/")
    wait_live(page)
    assert page.evaluate("document.getElementById('big').naturalWidth") == 320
    assert page.get_attribute("#big", "src") == "/dashboard/api/streams/main/mjpeg"
    first = page.locator("#big").screenshot()
    time.sleep(0.6)
    second = page.locator("#big").screenshot()
    assert first != second  # the test pattern's counter moves
    page.wait_for_selector("#streams button[aria-pressed=true]")
    stats = page.text_content("#streams [data-stream=main] .stats") or ""
    assert "live" in stats and "320×240" in stats and "dropped" in stats

    card = page.locator("#describers [data-describer=describe] .text")
    card.wait_for(timeout=10000)
    page.wait_for_function(
        "/description number \\d+/.test(document.querySelector('[data-describer=describe] .text').textContent)")
    seen = {card.text_content()}
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:  # final answers and the partial ones in between
        seen.add(card.text_content())
        time.sleep(0.05)
    assert len(seen) >= 3, seen
    page.wait_for_function("document.querySelectorAll('#timeline li').length >= 2", timeout=10000)
    assert "latency" in (page.text_content("[data-describer=describe] .meta") or "")
    page.wait_for_function("document.querySelector('#status-list').textContent.includes('fake-1')")
    status = page.text_content("#status-list") or ""
    assert "fake" in status and "ready" in status and "running" in status
    shots(page, "live-and-descriptions")
    assert errors == []


def test_alert_rules_from_the_page(service: Callable[..., Service], browser: Any,
                                   shots: Callable[[Any, str], Path]) -> None:
    svc = service()
    page, errors = open_page(browser, svc.base + "/")
    page.wait_for_selector("#rules tbody td.muted")  # "No rules yet"

    # The API's validation error is shown next to the field it names.
    page.fill("#rule-form [name=prompt]", "Is the door open?")
    page.fill("#rule-form [name=on_frames]", "0")
    page.click("#rule-submit")
    page.wait_for_function("document.getElementById('err-on_frames').textContent.length > 0")
    message = page.text_content("#err-on_frames") or ""
    refused = httpx.post(svc.base + "/v1/alerts", json={"alerts": [{"id": "x", "prompt": "Is the door open?",
                                                                     "on_frames": 0}], "mode": "add"}).json()
    assert refused["error"]["param"] == "alerts[0].on_frames"
    assert message == refused["error"]["message"].removeprefix("alerts[0].on_frames: ")  # the API's words
    assert page.get_attribute("#rule-form [name=on_frames]", "aria-invalid") == "true"
    shots(page, "alert-validation-error")

    page.fill("#rule-form [name=id]", "pattern")
    page.fill("#rule-form [name=prompt]", "Is the YES test pattern visible?")
    page.fill("#rule-form [name=on_frames]", "")
    page.fill("#rule-form [name=cooldown]", "5")
    page.click("#rule-submit")
    page.wait_for_selector("#rules tr[data-rule=pattern]")
    rules = httpx.get(svc.base + "/v1/alerts").json()["data"]
    assert [(r["id"], r["prompt"], r["cooldown"]) for r in rules] == [
        ("pattern", "Is the YES test pattern visible?", 5.0)]
    assert page.text_content("#err-on_frames") == ""

    page.wait_for_selector("#rules tr[data-rule=pattern] [data-state=on]", timeout=10000)
    snapshot = page.locator("#history li[data-rule=pattern][data-state=on] img").first
    snapshot.wait_for(timeout=5000)
    page.wait_for_function(
        "document.querySelector('#history li[data-state=on] img').naturalWidth > 0", timeout=5000)
    assert (snapshot.get_attribute("src") or "").startswith("/dashboard/api/snapshots/alert-")
    shots(page, "alert-on-with-snapshot")

    page.click("#rules tr[data-rule=pattern] button:has-text('Edit')")
    page.fill("#rule-form [name=cooldown]", "7")
    page.click("#rule-submit")
    page.wait_for_function("document.querySelector('#rules tr[data-rule=pattern]').textContent.includes('7 s')")
    assert httpx.get(svc.base + "/v1/alerts/pattern").json()["cooldown"] == 7.0

    page.click("#rules tr[data-rule=pattern] button:has-text('Delete')")
    page.wait_for_selector("#rules tr[data-rule=pattern]", state="detached")
    assert httpx.get(svc.base + "/v1/alerts").json()["data"] == []
    page.wait_for_selector("#history li[data-state=deleted]")
    shots(page, "alert-deleted")
    # The one 400 above is the browser's own log line for a refused request, not a page error.
    assert [e for e in errors if "400" not in e] == []


def test_chat_streams_the_answer(service: Callable[..., Service], browser: Any,
                                 shots: Callable[[Any, str], Path]) -> None:
    svc = service()
    page, errors = open_page(browser, svc.base + "/")
    wait_live(page)
    page.fill("#question", "What do you see?")
    page.press("#question", "Enter")
    answer = page.locator("#chat-log .msg.assistant").first
    lengths: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = answer.text_content() or ""
        if not lengths or len(text) != lengths[-1]:
            lengths.append(len(text))
        if text == CHAT_ANSWER:
            break
        time.sleep(0.02)
    assert answer.text_content() == CHAT_ANSWER
    growing = [n for n in lengths if 0 < n < len(CHAT_ANSWER)]
    assert len(growing) >= 4, lengths  # it appeared piece by piece, not at once
    page.wait_for_function("document.querySelector('#chat-log .turn img').naturalWidth === 320")
    shots(page, "chat-first-answer")

    page.fill("#question", "And now?")
    page.click("#ask")
    page.wait_for_function(f"document.querySelectorAll('#chat-log .msg.assistant')[1].textContent === {CHAT_ANSWER!r}")
    assert svc.backend is not None
    chats = [r for r in svc.backend.requests if r.text in ("What do you see?", "And now?")]
    assert [len(r.messages) for r in chats] == [1, 3]  # the second turn carries the first one
    assert chats[1].messages[1].text() == CHAT_ANSWER and len(chats[1].images()) == 1
    shots(page, "chat-two-turns")
    assert errors == []


def test_api_key_locks_the_page(service: Callable[..., Service], browser: Any,
                                shots: Callable[[Any, str], Path]) -> None:
    svc = service(api_key="s3cret-key")
    for path in ("/v1/events", "/dashboard/api/streams/main/mjpeg", "/dashboard/api/status", "/v1/alerts"):
        assert httpx.get(svc.base + path, timeout=5).status_code == 401, path
        assert httpx.get(svc.base + path, timeout=5, headers={"Cookie": "framelens_session=forged"}).status_code == 401
    with httpx.stream("GET", svc.base + "/v1/events", headers={"Authorization": "Bearer s3cret-key"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")

    page, errors = open_page(browser, svc.base + "/")
    page.wait_for_selector("#lock:not([hidden])")
    assert page.is_hidden("#main")
    shots(page, "locked")
    assert errors == []  # the page asks whether it is locked before it asks for data
    page.fill("#key", "wrong")
    page.press("#key", "Enter")
    page.wait_for_function("document.getElementById('key-error').textContent.includes('Wrong key')")
    assert page.is_hidden("#main")
    assert browser.cookies() == []
    shots(page, "wrong-key")

    page.fill("#key", "s3cret-key")
    page.press("#key", "Enter")
    page.wait_for_selector("#main:not([hidden])")
    wait_live(page)  # the MJPEG route took the cookie
    page.wait_for_function("document.getElementById('conn').textContent === 'live'")  # and the SSE route
    cookies = browser.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("framelens_session", True, "Strict")]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
    token = cookies[0]["value"]
    assert httpx.get(svc.base + "/v1/alerts", headers={"Cookie": f"framelens_session={token}"}).status_code == 200
    shots(page, "unlocked")

    page.click("#logout")
    page.wait_for_selector("#lock:not([hidden])")
    assert browser.cookies() == []
    assert httpx.get(svc.base + "/v1/alerts", headers={"Cookie": f"framelens_session={token}"}).status_code == 401
    # Logging in again resumes the event stream where it stopped: nothing is shown twice.
    page.fill("#key", "s3cret-key")
    page.press("#key", "Enter")
    page.wait_for_selector("#main:not([hidden])")
    page.wait_for_function("document.querySelectorAll('#timeline li').length >= 2", timeout=10000)
    entries = page.eval_on_selector_all("#timeline li", "items => items.map(i => i.textContent)")
    assert len(entries) == len(set(entries)), entries
    assert [e for e in errors if "401" not in e] == []  # only the refused wrong key


@pytest.mark.parametrize(("width", "height", "scheme"), [(390, 844, "dark"), (3840, 2160, "light")])
def test_phone_and_4k_in_both_themes(service: Callable[..., Service], browser: Any,
                                     shots: Callable[[Any, str], Path], width: int, height: int, scheme: str) -> None:
    svc = service()
    page, errors = open_page(browser, "about:blank")
    page.set_viewport_size({"width": width, "height": height})
    page.emulate_media(color_scheme=scheme)
    page.goto(svc.base + "/", wait_until="domcontentloaded")
    wait_live(page)
    page.wait_for_selector("[data-describer=describe]")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(17, 20, 24)") == (scheme == "dark")
    # Keyboard: Tab reaches the controls, "/" jumps to the chat box.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON", "INPUT")
    page.locator("body").click(position={"x": 1, "y": 1})
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "question"
    shots(page, f"{width}x{height}-{scheme}")
    assert errors == []


def _live_page_with_cam2(service: Callable[..., Service], browser: Any) -> tuple[Context, Any, list[str]]:
    """A service whose context also has the live stream ``cam2``, and its dashboard page, live."""
    svc = service()
    svc.add_stream("cam2")
    page, errors = open_page(browser, svc.base + "/")
    wait_live(page)
    return svc.context, page, errors


def test_selecting_a_stream_makes_it_big(service: Callable[..., Service], browser: Any,
                                         shots: Callable[[Any, str], Path]) -> None:
    # A second live stream, as a request would open it: another test pattern under its own id.
    context, page, errors = _live_page_with_cam2(service, browser)
    page.wait_for_selector("#streams [data-stream=cam2]")
    assert page.get_attribute("#streams [data-stream=main]", "aria-pressed") == "true"
    page.click("#streams [data-stream=cam2]")
    assert page.get_attribute("#big", "src") == "/dashboard/api/streams/cam2/mjpeg"
    assert page.get_attribute("#streams [data-stream=cam2]", "aria-pressed") == "true"
    page.wait_for_function("document.getElementById('big').naturalWidth === 320")
    page.wait_for_function("document.getElementById('big-caption').textContent.startsWith('cam2')")
    shots(page, "second-stream-selected")
    page.locator("body").click(position={"x": 1, "y": 1})
    page.keyboard.press("1")  # digits pick a stream
    assert page.get_attribute("#big", "src") == "/dashboard/api/streams/main/mjpeg"
    context.streams.remove("cam2")
    page.wait_for_selector("#streams [data-stream=cam2]", state="detached", timeout=5000)
    assert errors == []


def test_stream_cards_show_the_pipelines_rate_and_latency(service: Callable[..., Service], browser: Any,
                                                          shots: Callable[[Any, str], Path]) -> None:
    import re

    # A stream no pipeline processes: its card shows no pipeline numbers.
    context, page, errors = _live_page_with_cam2(service, browser)
    pattern = r"processed (\d+\.\d) fps · (\d+(?:\.\d)?) ms latency"
    # The first status call has no rate yet ("—"); the next refresh (every 2 s) has one.
    page.wait_for_function(
        f"/{pattern}/.test(document.querySelector('#streams [data-stream=main] .pipeline').textContent)",
        timeout=15000)
    text = page.text_content("#streams [data-stream=main] .pipeline") or ""
    found = re.search(pattern, text)
    assert found, text
    fps, latency = float(found.group(1)), float(found.group(2))
    assert 8 <= fps <= 17, text          # the test pattern's 15 fps, every frame processed
    assert 0 < latency < 500, text       # capture to outputs
    assert re.search(pattern, page.text_content("#big-caption") or ""), "the big view's caption has them too"
    page.wait_for_selector("#streams [data-stream=cam2]")
    assert page.locator("#streams [data-stream=cam2] .pipeline").is_hidden()
    assert "fps" in (page.text_content("#streams [data-stream=cam2] .stats") or "")
    shots(page, "pipeline-numbers")
    context.streams.remove("cam2")
    assert errors == []
