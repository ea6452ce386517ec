"""The mqtt service against a real mosquitto: topics, payloads, QoS/retain, availability,
buffering while the broker is away, Home Assistant discovery, ask/answer."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alerts_helpers import Broker, ScriptedVLM, find_mosquitto, mosquitto, wait_for  # noqa: F401
from fakes import FakeOllama
from helpers import ROOT, run_cli
from mqtt_helpers import Listener, publish_one
from prometheus_client import generate_latest

from framelens import Context, EventBus
from framelens.mqtt import parse_mqtt_url
from framelens.options import parse_options
from framelens.plugins.mqtt import MqttOptions, MqttService, parse_question
from framelens.plugins.sources.testpattern import read_code
from framelens.registry import Registry
from framelens.testing import backend_registered, run_pipeline


def make_service(port: int, **options: Any) -> tuple[MqttService, Context]:
    context = Context(Registry(), events=EventBus())
    opts = parse_options(MqttOptions, {"url": f"mqtt://127.0.0.1:{port}/site", "node": "n1", **options},
                         namespace="mqtt")
    return MqttService(opts, context), context


# -- a whole run: every event on its topic, byte for byte -------------------------------------


RULES = json.dumps([{"id": "smoke", "prompt": "Is there smoke?", "on_frames": 1, "off_frames": 1}])


def test_every_event_of_a_run_reaches_its_topic_as_on_events(tmp_path: Path, mosquitto: Broker) -> None:  # noqa: F811
    events = tmp_path / "events.jsonl"
    backend = ScriptedVLM({"smoke": lambda i: "Yes." if 10 <= i <= 30 else "No.",
                           "Describe": lambda i: f"frame {i}"})
    with Listener(mosquitto.port, "site/#") as listener, backend_registered("scripted", backend):
        run_pipeline(["-s", "testpattern", "-c", "testpattern-fps=50", "-c", "testpattern-width=320",
                      "-c", "testpattern-height=240", "--max-frames", "60", "--backend", "scripted",
                      "-p", "alerts", "-c", "alerts-interval=0", "-c", f"alerts-rules={RULES}",
                      "-p", "describe", "-c", "describe-stream=false",
                      "-p", "mqtt", "-c", f"mqtt-url=mqtt://127.0.0.1:{mosquitto.port}/site", "-c", "mqtt-node=n1",
                      "--events", str(events)])
        lines = events.read_text().splitlines()
        types = {json.loads(line)["type"] for line in lines}
        assert {"run", "source", "alert", "description"} <= types
        expected: list[tuple[str, bytes]] = []
        for line in lines:
            event = json.loads(line)
            base = f"site/{event['source']}" if event["source"] else "site/_nodes/n1"
            expected.append((f"{base}/{event['type']}", line.encode()))
        # The stop event is published after the service stopped, so it is the only one missing.
        expected = [e for e in expected if b'"stopped"' not in e[1] or not e[0].endswith("/run")]
        per_type = [(t, p) for t, p, _, _ in listener.messages if t.count("/") == 2 or t.startswith("site/_nodes")]
        assert wait_for(lambda: len([m for m in listener.messages if m[0] != "site/_nodes/n1/availability"
                                     and m[0].count("/") == 2]) >= len([e for e in expected
                                                                        if not e[0].startswith("site/_nodes")]))
        got = [(t, p) for t, p, _, _ in listener.messages if not t.endswith("availability")
               and (t.count("/") == 2 or t.startswith("site/_nodes/n1/"))]
        assert got == expected, per_type
        # QoS per type: descriptions, alerts and source state at least once; run events at most once.
        qos = {t.rsplit("/", 1)[1]: q for t, _, q, _ in listener.messages if t.count("/") == 2}
        assert qos["description"] == 1 and qos["alert"] == 1 and qos["source"] == 1
        assert {q for t, _, q, _ in listener.messages if t == "site/_nodes/n1/run"} == {0}
        availability = [p for t, p, _, _ in listener.messages if t == "site/_nodes/n1/availability"]
        assert availability[0] == b"online" and wait_for(lambda: listener.on("site/_nodes/n1/availability")[-1][1]
                                                         == b"offline")
    last_alert = [json.loads(line) for line in lines if json.loads(line)["type"] == "alert"][-1]
    last_description = [line for line in lines if json.loads(line)["type"] == "description"][-1]
    # A client that connects afterwards gets the retained state: newest description, source state,
    # each rule's newest transition, availability offline.
    with Listener(mosquitto.port, "site/#") as late:
        assert wait_for(lambda: {"site/main/description", "site/main/source", "site/main/alert/smoke",
                                 "site/main/description/describe", "site/_nodes/n1/availability"} <= late.topics())
        assert all(retain for _, _, _, retain in late.messages)
        assert late.on("site/main/description")[0][1] == last_description.encode()
        assert late.on("site/main/description/describe")[0][1] == last_description.encode()
        assert json.loads(late.on("site/main/alert/smoke")[0][1]) == last_alert
        assert late.on("site/_nodes/n1/availability")[0][1] == b"offline"
        assert "site/main/alert" not in late.topics()  # transitions themselves are not retained by default


# -- the broker away: buffered, bounded, drops counted -----------------------------------------


def test_events_wait_for_the_broker_and_drops_beyond_the_bound_are_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    binary = find_mosquitto()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    broker = Broker(binary, tmp_path)  # not started yet: the service starts while the broker is away
    service, context = make_service(broker.port, max_buffered="5", retain="note")
    caplog.set_level(logging.WARNING, logger="framelens.mqtt")
    service.start()
    try:
        for i in range(8):
            context.events.publish("note", {"n": i}, source=f"cam{i}")
        assert service.conn.buffered == 5 and service.conn.dropped == 3
        metrics = generate_latest(context.metrics).decode()
        assert 'framelens_mqtt_dropped_total{service="mqtt"} 3.0' in metrics
        assert 'framelens_mqtt_connected{service="mqtt"} 0.0' in metrics
        broker.start()
        assert service.conn.wait_connected(15)
        assert wait_for(lambda: service.conn.buffered == 0)
        with Listener(broker.port, "site/#") as listener:
            kept = {f"site/cam{i}/note" for i in range(3, 8)}
            assert wait_for(lambda: kept <= listener.topics())
            assert not any(f"site/cam{i}/note" in listener.topics() for i in range(3))
            assert [json.loads(listener.on(f"site/cam{i}/note")[0][1])["payload"] for i in range(3, 8)] == [
                {"n": i} for i in range(3, 8)]
            assert listener.on("site/_nodes/n1/availability")[0][1] == b"online"
        assert wait_for(lambda: "3 message(s) dropped" in caplog.text, 5)
    finally:
        service.stop()
        broker.stop()
    assert "were dropped in this run" in caplog.text


def test_the_last_will_marks_a_killed_process_offline(tmp_path: Path, mosquitto: Broker) -> None:  # noqa: F811
    with Listener(mosquitto.port, "site/_nodes/#") as listener:
        proc = start_run(mosquitto.port, [])
        try:
            assert wait_for(lambda: [p for _, p, _, _ in listener.on("site/_nodes/n1/availability")] == [b"online"],
                            20), proc_output(proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert wait_for(lambda: listener.on("site/_nodes/n1/availability")[-1][1] == b"offline", 10)
        finally:
            stop(proc)


# -- Home Assistant discovery ----------------------------------------------------------------


def test_home_assistant_discovery_announces_rules_and_describers(mosquitto: Broker) -> None:  # noqa: F811
    service, context = make_service(mosquitto.port, homeassistant="true")
    service.start()
    try:
        assert service.conn.wait_connected(10)
        with Listener(mosquitto.port, "homeassistant/#") as ha:
            context.events.publish("alert", {"processor": "alerts", "rule": "smoke", "prompt": "Is there smoke?",
                                             "state": "on"}, source="door")
            context.events.publish("alert", {"processor": "alerts", "rule": "smoke", "prompt": "Is there smoke?",
                                             "state": "off"}, source="door")
            context.events.publish("description", {"describer": "describe", "text": "A cat."}, source="door")
            binary = "homeassistant/binary_sensor/framelens_site/door_smoke/config"
            text = "homeassistant/sensor/framelens_site/door_describe/config"
            assert wait_for(lambda: {binary, text} <= ha.topics())
            assert len(ha.on(binary)) == 1  # announced once, not per transition
            config = json.loads(ha.on(binary)[0][1])
            assert config["state_topic"] == "site/door/alert/smoke" and config["name"] == "Is there smoke?"
            assert config["availability_topic"] == "site/_nodes/n1/availability"
            assert config["device"]["name"] == "framelens door" and ha.on(binary)[0][3] is False
            sensor = json.loads(ha.on(text)[0][1])
            assert sensor["state_topic"] == "site/door/description/describe"
            assert sensor["device"]["identifiers"] == config["device"]["identifiers"]  # one device per camera
            assert len({config["unique_id"], sensor["unique_id"]}) == 2
            # The state topics the configs point at hold what the templates read.
            with Listener(mosquitto.port, "site/door/#") as states:
                assert wait_for(lambda: {"site/door/alert/smoke", "site/door/description/describe"} <= states.topics())
                assert json.loads(states.on("site/door/alert/smoke")[0][1])["payload"]["state"] == "off"
                assert json.loads(states.on("site/door/description/describe")[0][1])["payload"]["text"] == "A cat."
            # Home Assistant's birth message: every sensor is announced again.
            publish_one(mosquitto.port, "homeassistant/status", "online")
            assert wait_for(lambda: len(ha.on(binary)) == 2 and len(ha.on(text)) == 2)
            # A deleted rule's sensor is removed (empty retained config).
            context.events.publish("alert", {"processor": "alerts", "rule": "smoke", "state": "deleted"}, source="door")
            assert wait_for(lambda: ha.on(binary)[-1][1] == b"")
    finally:
        service.stop()
    with Listener(mosquitto.port, "homeassistant/#") as late:
        assert wait_for(lambda: "homeassistant/sensor/framelens_site/door_describe/config" in late.topics())
        assert "homeassistant/binary_sensor/framelens_site/door_smoke/config" not in late.topics()


# -- ask / answer --------------------------------------------------------------------------


def frame_reply(body: Mapping[str, Any], images: list[np.ndarray], videos: list[Any]) -> str:
    question = body["messages"][-1]["content"]
    return f"{question} -> frame {read_code(images[0])}" if images else "no image"


def start_run(port: int, extra: list[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "framelens", "run", "-s", "testpattern", "-c", "testpattern-fps=25",
           "-c", "testpattern-width=320", "-c", "testpattern-height=240", "-o", "none",
           "-p", "mqtt", "-c", f"mqtt-url=mqtt://127.0.0.1:{port}/site", "-c", "mqtt-node=n1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def proc_output(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        return "(still running)"
    return proc.stdout.read() if proc.stdout else ""


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def asking_run(mosquitto: Broker) -> Iterator[tuple[Broker, subprocess.Popen[str], FakeOllama]]:  # noqa: F811
    with FakeOllama(reply=frame_reply) as ollama:
        proc = start_run(mosquitto.port, ["--backend", "ollama", "-c", f"ollama-url={ollama.url}",
                                          "-c", "ollama-model=llava", "-c", "mqtt-ask-max-side=0"])
        try:
            yield mosquitto, proc, ollama
        finally:
            stop(proc)


def test_ask_answers_about_the_cameras_newest_frame(asking_run: tuple[Broker, subprocess.Popen[str], Any]) -> None:
    broker, proc, ollama = asking_run
    with Listener(broker.port, "site/#") as listener:
        assert wait_for(lambda: listener.on("site/main/source") != [], 20), proc_output(proc)
        publish_one(broker.port, "site/main/ask", "What frame is this?")
        publish_one(broker.port, "site/main/ask", json.dumps({"question": "And now?", "id": "q2"}))
        publish_one(broker.port, "site/main/ask", '{"question": ')
        publish_one(broker.port, "site/nope/ask", "Anyone there?")
        assert wait_for(lambda: len(listener.on("site/main/answer")) == 3 and listener.on("site/nope/answer"), 20)
        answers = {a["question"]: a for a in listener.json_on("site/main/answer")}
        first, second = answers["What frame is this?"], answers["And now?"]
        for answer in (first, second):
            assert answer["error"] is None and answer["camera"] == "main" and answer["model"].startswith("llava")
            # The fake model read the frame number from the very image it was sent.
            assert answer["answer"] == f"{answer['question']} -> frame {answer['frame_index']}"
            assert answer["answered_at"] >= answer["captured_at"]
        assert first["id"] is None and second["id"] == "q2"
        bad = answers[None]
        assert bad["answer"] is None and "not valid JSON" in bad["error"]
        nope = listener.json_on("site/nope/answer")[0]
        assert nope["error"] == "no live camera 'nope' (cameras: main)"
        assert len(ollama.requests_to("/api/chat")) == 2


def test_ask_reports_a_backend_that_is_down(mosquitto: Broker) -> None:  # noqa: F811
    proc = start_run(mosquitto.port, ["--backend", "ollama", "-c", "ollama-url=http://127.0.0.1:9",
                                      "-c", "ollama-retries=0"])
    try:
        with Listener(mosquitto.port, "site/#") as listener:
            assert wait_for(lambda: listener.on("site/main/source") != [], 20), proc_output(proc)
            publish_one(mosquitto.port, "site/main/ask", json.dumps({"question": "Hello?", "id": 7}))
            assert wait_for(lambda: listener.on("site/main/answer") != [], 20)
            answer = listener.json_on("site/main/answer")[0]
            assert answer["id"] == "7" and answer["answer"] is None
            assert answer["error"].startswith("backend ollama: Ollama is not reachable at http://127.0.0.1:9")
    finally:
        stop(proc)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "the question is empty"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", None),
    (b'{"question": 3}', '"question" must be a non-empty string'),
    (b'{"question": "hi", "id": [1]}', '"id" must be a string or a number'),
])
def test_bad_questions_are_named(payload: bytes, message: str | None) -> None:
    if payload == b"[1, 2]":
        assert parse_question(payload) == ("[1, 2]", None)  # not an object: taken as the question text
        return
    with pytest.raises(ValueError, match=message):
        parse_question(payload)


@pytest.mark.parametrize(("setting", "message"), [
    ("mqtt-url=tcp://broker", "mqtt-url.*expected mqtt://host"),
    ("mqtt-qos=alert:3", "mqtt-qos.*expected TYPE:QOS"),
    ("mqtt-node=a/b", "mqtt-node.*topic level"),
])
def test_bad_options_exit_2_with_one_line(setting: str, message: str) -> None:
    extra = [] if setting.startswith("mqtt-url") else ["-c", "mqtt-url=mqtt://127.0.0.1:1/x"]
    result = run_cli(["run", "-s", "testpattern", "--max-frames", "1", "-o", "none", "-p", "mqtt",
                      "-c", setting, *extra])
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr), result.stderr


def test_the_url_parser_is_the_cores() -> None:
    target = parse_mqtt_url("mqtts://u:p%40ss@broker:8884/a/b")
    assert (target.host, target.port, target.prefix, target.username, target.password, target.tls) == (
        "broker", 8884, "a/b", "u", "p@ss", True)
    from framelens.plugins.alerts.mqtt import parse_mqtt_url as alerts_parse

    assert alerts_parse is parse_mqtt_url
