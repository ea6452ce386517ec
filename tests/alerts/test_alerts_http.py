"""The alerts HTTP API end to end: ``framelens run`` with ``-p alerts -p http`` against a fake Ollama.

The protocol-faithful fake Ollama (``tests/fakes``) answers each rule from a
script keyed by the frame number it reads from the image, so the rules set
over HTTP turn on and off at known frames; the transitions must arrive on the
SSE stream, on ``--events`` and in ``GET /v1/alerts``, while chat requests to
the same service are answered and cancel nothing.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from _http_support import echo_service, solid_png
from alerts_helpers import frame_of, wait_for
from fakes import FakeOllama, FakeOpenAI
from helpers import ROOT, free_port

Answer = Callable[[int], bool | str]


class RuleScript:
    """A fake-server reply function: per rule, an answer for each frame *relative to the first one seen*.

    Rules are POSTed at a moment the test does not control, so "on for frames
    25-75" counts from the first frame the alerts processor sent.
    """

    def __init__(self, answers: Mapping[str, Answer]) -> None:
        self.answers = answers
        self.first: int | None = None
        self.alert_requests = 0
        self.chat_requests = 0
        self.formats: list[str] = []

    def answer(self, question: str, index: int) -> bool | str:
        for key, fn in self.answers.items():
            if key in question:
                return fn(index)
        return "I cannot tell"

    def __call__(self, body: Mapping[str, Any], images: list[np.ndarray], videos: Any) -> str:
        content = body["messages"][-1]["content"]  # Ollama: a string; OpenAI: a list of parts
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        if "Describe" in text:
            self.chat_requests += 1
            return "A test pattern with colour bars."
        frame = frame_of(images[0])
        if self.first is None:
            self.first = frame
        index = frame - self.first
        self.alert_requests += 1
        fmt = body.get("format")
        if isinstance(fmt, dict):
            self.formats.append("schema")
            return json.dumps({rule_id: self.answer(prop["description"], index)
                               for rule_id, prop in fmt["properties"].items()})
        self.formats.append("text")
        value = self.answer(text, index)
        return ("Yes." if value else "No.") if isinstance(value, bool) else value


class SseReader:
    """Reads ``GET /v1/alerts/events`` on a thread; ``events`` are the parsed ``data:`` objects."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.status: int | None = None
        self.content_type = ""
        self.ended = threading.Event()
        self.headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=60)) as r:
                self.status = r.status_code
                self.content_type = r.headers.get("content-type", "")
                block: dict[str, str] = {}
                for line in r.iter_lines():
                    if line == "":
                        if block.get("event") == "alert":
                            self.ids.append(block["id"])
                            self.events.append(json.loads(block["data"]))
                        block = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(": ")
                        block[key] = value
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def states(self, rule: str) -> list[str]:
        return [e["payload"]["state"] for e in self.events if e["payload"]["rule"] == rule]


class Framelens:
    """``python -m framelens run ...`` in a subprocess, with its HTTP API on a free port."""

    def __init__(self, args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "framelens", "run", "-p", "http", "-c", f"http-port={self.port}", *args],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"framelens exited {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/v1/alerts", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("framelens did not come up")
            time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"framelens did not stop on SIGINT: {err}") from None
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture
def script() -> RuleScript:
    return RuleScript({
        "smoke": lambda i: 25 <= i <= 75,
        "door": lambda i: False,
    })


@pytest.fixture
def ollama(script: RuleScript) -> Iterator[FakeOllama]:
    with FakeOllama(reply=script) as server:
        yield server


def pipeline_args(ollama_url: str | None, tmp_path: Path, *extra: str) -> list[str]:
    backend = ["-c", "alerts-backend=ollama", "-c", f"ollama-url={ollama_url}", "-c", "ollama-model=llava",
               "-c", "http-backend=ollama"] if ollama_url else []
    return ["-s", "testpattern", "-c", "testpattern-fps=40", "-c", "testpattern-width=320",
            "-c", "testpattern-height=240", "-o", "none", "-p", "alerts", *backend, "-c", "alerts-interval=0",
            "-c", "alerts-max-rules=3", "-c", "alerts-max-prompt-chars=60", "-c", f"alerts-snapshot-dir={tmp_path}",
            "--events", str(tmp_path / "events.jsonl"), *extra]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error: dict[str, Any] = body["error"]
    return error


def test_rules_over_http_with_sse_metrics_chat_and_events(ollama: FakeOllama, script: RuleScript,
                                                         tmp_path: Path) -> None:
    app = Framelens(pipeline_args(ollama.url, tmp_path))
    try:
        api = app.url + "/v1/alerts"
        listing = httpx.get(api).json()
        assert (listing["object"], listing["data"], listing["backend"], listing["max_rules"]) == ("list", [],
                                                                                                 "ollama", 3)
        sse = SseReader(api + "/events")
        assert wait_for(lambda: sse.status == 200)
        assert sse.content_type.startswith("text/event-stream")
        posted = httpx.post(api, json={"alerts": ["Is there smoke?",
                                                  {"id": "door", "prompt": "Is the door open?", "on_frames": 2}]})
        assert posted.status_code == 200, posted.text
        body = posted.json()
        assert body["detail"] == "Alert rules set"
        assert [(r["id"], r["state"], r["on_frames"]) for r in body["data"]] == [("r0", "unknown", 1),
                                                                               ("door", "unknown", 2)]
        # smoke turns on 25 frames after the first evaluation and off again after 75.
        assert wait_for(lambda: sse.states("r0") == ["off", "on", "off"], timeout=30), sse.events
        assert sse.states("door") == ["off"]
        assert set(script.formats) == {"schema"}  # two rules, Ollama takes a schema: one request for both
        on = next(e["payload"] for e in sse.events if e["payload"]["state"] == "on")
        assert Path(on["snapshot_path"]).exists() and on["notify"] is True and on["backend"] == "ollama"

        # Chat requests share the backend; they are answered and alerts go on being evaluated.
        before = httpx.get(api + "/r0").json()["evaluations"]
        client = openai.OpenAI(base_url=app.url + "/v1", api_key="unused")
        png = "data:image/png;base64," + base64.b64encode(solid_png()).decode()
        for _ in range(3):
            reply = client.chat.completions.create(model="llava", messages=[{"role": "user", "content": [
                {"type": "text", "text": "Describe the picture."}, {"type": "image_url", "image_url": {"url": png}}]}])
            assert reply.choices[0].message.content == "A test pattern with colour bars."
        assert wait_for(lambda: httpx.get(api + "/r0").json()["evaluations"] > before + 5)
        rule = httpx.get(api + "/r0").json()
        assert (rule["state"], rule["last_result"], rule["prompt"]) == ("off", "false", "Is there smoke?")
        assert rule["last_evaluated"] > time.time() - 10 and rule["last_latency_s"] >= 0

        metrics = httpx.get(app.url + "/metrics").text
        assert 'framelens_alert_state{processor="alerts",rule="r0"} 0.0' in metrics
        assert 'framelens_alert_state{processor="alerts",rule="door"} 0.0' in metrics
        assert 'framelens_alert_transitions_total{processor="alerts",rule="r0",state="on"} 1.0' in metrics
        assert 'framelens_alert_evaluations_total{processor="alerts",result="false",rule="door"}' in metrics
        assert 'framelens_alert_requests_total{mode="batch",outcome="ok",processor="alerts"}' in metrics

        # Deleting a rule is a transition too; its gauge disappears.
        deleted = httpx.delete(api + "/door")
        assert deleted.json() == {"id": "door", "object": "alert", "deleted": True}
        assert wait_for(lambda: sse.states("door") == ["off", "deleted"])
        assert 'framelens_alert_state{processor="alerts",rule="door"}' not in httpx.get(app.url + "/metrics").text
        assert [r["id"] for r in httpx.get(api).json()["data"]] == ["r0"]
        assert httpx.delete(api).json() == {"object": "list", "deleted": ["r0"], "data": []}
    finally:
        app.stop()
    assert sse.ended.wait(10)  # the stream ends cleanly at shutdown
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e for e in logged if e["type"] == "alert"] == sse.events  # the same transitions on both channels
    assert script.chat_requests == 3


def test_bad_input_gets_openai_errors_and_jps_clients_work(ollama: FakeOllama, tmp_path: Path) -> None:
    app = Framelens(pipeline_args(ollama.url, tmp_path))
    try:
        api = app.url + "/v1/alerts"
        cases = [
            ({"alerts": ["Is there smoke?", ""]}, "alerts[1]: the prompt must not be empty", "alerts[1].prompt"),
            ({"alerts": [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]}, "duplicate rule id 'a'",
             "alerts[1].id"),
            ({"alerts": ["a", "b", "c", "d"]}, "4 rules is more than the limit of 3", "alerts"),
            ({"alerts": ["x" * 61]}, "61 characters is longer than the limit of 60", "alerts[0].prompt"),
            ({"alerts": [{"id": "a", "prompt": "x", "colour": "red"}]}, "unknown field 'colour'", "alerts[0].colour"),
            ({"alerts": ["x"], "stream": True}, "unknown field 'stream'", "stream"),
            ({"rules": ["x"]}, "unknown field 'rules'", "rules"),
            ({"alerts": "Is there smoke?"}, "expected a list", "alerts"),
            ({"alerts": ["x"], "mode": "merge"}, "mode must be 'replace' or 'add'", "mode"),
        ]
        for body, message, param in cases:
            r = httpx.post(api, json=body)
            err = error_of(r)
            assert r.status_code == 400 and message in err["message"] and err["param"] == param, (body, err)
            assert err["type"] == "invalid_request_error"
        r = httpx.post(api, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "JSON" in error_of(r)["message"]
        assert httpx.get(api).json()["data"] == []  # nothing half-applied
        r = httpx.put(api + "/door", json={"id": "gate", "prompt": "Is the gate open?"})
        assert r.status_code == 400 and "the URL says 'door'" in error_of(r)["message"]
        r = httpx.put(api + "/door", json={"prompt": " "})
        assert r.status_code == 400 and error_of(r)["param"] == "prompt"
        assert error_of(r)["message"] == "prompt: the prompt must not be empty"
        r = httpx.delete(api + "/nope")
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        assert httpx.get(api + "/nope").status_code == 404

        # NVIDIA JPS clients: POST /api/v1/alerts with plain strings and a stream id.
        r = httpx.post(app.url + "/api/v1/alerts", json={"alerts": ["Is there a fire?", "Is it dark?"],
                                                         "id": "8d4a0f1e-stream"})
        assert r.status_code == 200 and r.json()["detail"] == "Alert rules set"
        assert [x["id"] for x in httpx.get(api).json()["data"]] == ["r0", "r1"]
        # add mode, and PUT of one rule
        r = httpx.post(api, json={"alerts": [{"id": "door", "prompt": "Is the door open?"}], "mode": "add"})
        assert [x["id"] for x in r.json()["data"]] == ["r0", "r1", "door"]
        r = httpx.put(api + "/door", json={"prompt": "Is the door open?", "cooldown": 5, "severity": "info"})
        assert (r.json()["cooldown"], r.json()["severity"]) == (5.0, "info")
        r = httpx.post(api, json={"alerts": ["one more?"], "mode": "add"})
        assert r.status_code == 400 and "4 rules is more than the limit of 3" in error_of(r)["message"]
        doc = httpx.get(app.url + "/openapi.json").json()
        assert {"get", "post", "delete"} <= set(doc["paths"]["/v1/alerts"])
        assert "AlertsRequest" in doc["components"]["schemas"] and "/v1/alerts/events" in doc["paths"]
    finally:
        app.stop()


def test_rules_set_over_http_survive_a_restart(ollama: FakeOllama, tmp_path: Path) -> None:
    store = tmp_path / "rules.json"
    app = Framelens(pipeline_args(ollama.url, tmp_path, "-c", f"alerts-store={store}"))
    try:
        r = httpx.post(app.url + "/v1/alerts", json={"alerts": [{"id": "smoke", "prompt": "Is there smoke?",
                                                                 "off_frames": 3}]})
        assert r.status_code == 200
    finally:
        app.stop()
    assert json.loads(store.read_text())["rules"] == [{"id": "smoke", "prompt": "Is there smoke?", "off_frames": 3,
                                                       "severity": "warning"}]
    app = Framelens(pipeline_args(ollama.url, tmp_path, "-c", f"alerts-store={store}"))
    try:
        rules = httpx.get(app.url + "/v1/alerts").json()["data"]
        assert [(r["id"], r["off_frames"]) for r in rules] == [("smoke", 3)]
    finally:
        app.stop()


def test_sse_replays_missed_events_after_last_event_id(ollama: FakeOllama, tmp_path: Path) -> None:
    app = Framelens(pipeline_args(ollama.url, tmp_path))
    try:
        api = app.url + "/v1/alerts"
        first = SseReader(api + "/events")
        assert wait_for(lambda: first.status == 200)
        httpx.post(api, json={"alerts": ["Is there smoke?", "Is the door open?"]})
        assert wait_for(lambda: len(first.events) >= 2)
        # A client that saw only the first event gets the rest from the history.
        again = SseReader(api + "/events", last_event_id=first.ids[0])
        assert wait_for(lambda: len(again.events) >= len(first.events) - 1)
        assert again.events[: len(first.events) - 1] == first.events[1:]
    finally:
        app.stop()


def test_per_rule_yes_no_requests_through_an_openai_compatible_server(tmp_path: Path) -> None:
    script = RuleScript({"smoke": lambda i: "YES!" if i >= 10 else "no."})
    with FakeOpenAI(reply=script) as nim:
        app = Framelens(pipeline_args(None, tmp_path, "-c", f"nim-url={nim.base_url}", "-c", "http-backend=nim",
                                      "-c", "alerts-backend=nim", "-c", "alerts-mode=per-rule"))
        try:
            api = app.url + "/v1/alerts"
            httpx.post(api, json={"alerts": ["Is there smoke?", "Is the door open?"]})
            assert wait_for(lambda: httpx.get(api + "/r0").json()["state"] == "on", timeout=30)
            door = httpx.get(api + "/r1").json()
            assert (door["state"], door["last_result"], door["last_answer"]) == ("unknown", "unknown", "I cannot tell")
        finally:
            app.stop()
    assert set(script.formats) == {"text"}
    body = next(r.json() for r in nim.requests_to("/v1/chat/completions"))
    assert "response_format" not in body and body["max_tokens"] == 8 and body["temperature"] == 0


def test_alert_routes_say_how_to_enable_alerts_when_no_processor_runs() -> None:
    with echo_service() as (running, _):
        r = httpx.get(running.v1 + "/alerts")
        assert r.status_code == 404 and "-p alerts" in error_of(r)["message"]
        assert error_of(r)["code"] == "plugin_not_enabled"
        # Not mounted, so not advertised either.
        paths = httpx.get(running.service.url + "/openapi.json").json()["paths"]
        assert "/v1/alerts" not in paths and "/v1/chat/completions" in paths
