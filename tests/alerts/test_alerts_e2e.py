"""End to end: the alerts processor in a real pipeline (testpattern -> alerts -> outputs).

A scripted VLM reads the frame number out of each image it is sent and
answers from a per-rule script, so every transition can be checked against
the frames where the script says the answer changed. Transitions must arrive
on ``--events``, at a local webhook receiver and at a real mosquitto broker.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from alerts_helpers import (
    Broker,
    ScriptedVLM,
    WebhookReceiver,
    async_gate,
    frame_of,
    mosquitto,  # noqa: F401 - a fixture
    wait_for,
)
from helpers import free_port, run_cli
from mqtt_helpers import Listener

from framelens import Event, EventBus, Frame, Processor, RegisterFn, decode_image, hookimpl
from framelens.plugins.alerts.mqtt import MqttNotifier, parse_mqtt_url
from framelens.plugins.alerts.processor import AlertsProcessor
from framelens.plugins.alerts.status import AlertStatus
from framelens.testing import backend_registered, plugin_registered, run_pipeline

FPS = "50"


def run_alerts(backend: ScriptedVLM, *args: str, frames: int = 200, events: Path | None = None,
               extra_plugin: Any = None) -> tuple[dict[str, Any], list[Frame], AlertsProcessor]:
    argv = ["-s", "testpattern", "-c", f"testpattern-fps={FPS}", "-c", "testpattern-width=320",
            "-c", "testpattern-height=240", "--max-frames", str(frames), "-p", "alerts",
            "-c", "alerts-backend=scripted", "-c", "alerts-interval=0", *args]
    if events is not None:
        argv += ["--events", str(events)]
    with backend_registered("scripted", backend):
        if extra_plugin is not None:
            with plugin_registered(extra_plugin, "test-extra"):
                report, output, runtime = run_pipeline(argv)
        else:
            report, output, runtime = run_pipeline(argv)
    processor = runtime.stages[0].processor
    assert isinstance(processor, AlertsProcessor)
    return report, output.frames, processor


def alert_events(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["type"] == "alert"]


def by_rule(events: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in events if e["payload"]["rule"] == rule]


RULES = json.dumps([
    {"id": "smoke", "prompt": "Is there smoke?", "on_frames": 2, "off_frames": 2, "severity": "critical"},
    {"id": "person", "prompt": "Is a person lying on the floor?"},
    {"id": "vague", "prompt": "Is the weather nice?"},
])
SCRIPT = {
    "smoke": lambda i: "Yes." if 40 <= i <= 100 else "No.",
    "floor": lambda i: False,
    "weather": lambda i: "It is hard to say from this picture.",
}


def check_smoke_story(smoke: list[dict[str, Any]]) -> None:
    """off (first answers), on after two yes from frame 40, off after two no from frame 101."""
    assert [(p["previous"], p["state"]) for p in smoke] == [("unknown", "off"), ("off", "on"), ("on", "off")]
    _, on, off = smoke
    assert 41 <= on["frame_index"] <= 100 and off["frame_index"] >= 102
    assert (on["notify"], off["notify"], on["severity"], on["prompt"]) == (True, True, "critical", "Is there smoke?")
    assert on["latency_s"] >= 0 and on["capture_time"] > 0 and on["evaluated_at"] >= on["capture_time"]


@pytest.mark.parametrize("schema", [True, False], ids=["batched", "per-rule"])
def test_transitions_follow_the_script_and_reach_events_and_webhook(tmp_path: Path, schema: bool) -> None:
    backend = ScriptedVLM(SCRIPT, schema=schema)
    events = tmp_path / "events.jsonl"
    with WebhookReceiver(fail_first=1) as hook:
        report, frames, proc = run_alerts(
            backend, "-c", f"alerts-rules={RULES}", "-c", f"alerts-webhook={hook.url}",
            "-c", "alerts-webhook-header=Authorization: Bearer s3cret", "-c", f"alerts-snapshot-dir={tmp_path}/snaps",
            events=events)
    assert report["frames"] == 200 and len(frames) == 200
    assert set(backend.modes) == {"batch" if schema else "per-rule"}
    got = alert_events(events)
    check_smoke_story(by_rule(got, "smoke"))
    assert [(p["previous"], p["state"], p["notify"]) for p in by_rule(got, "person")] == [("unknown", "off", False)]
    assert by_rule(got, "vague") == []  # never a yes or no: it stays unknown, never a silent "off"
    vague = proc.engine.view("vague")[0]
    assert (vague["state"], vague["last_result"]) == ("unknown", "unknown")
    assert vague["last_answer"].startswith("It is hard to say") or "It is hard to say" in vague["last_answer"]
    # Every snapshot is the very frame that was judged.
    for e in got:
        p = e["payload"]
        assert e["frame_index"] == p["frame_index"]
        assert frame_of(decode_image(Path(p["snapshot_path"]).read_bytes())) == p["frame_index"]
    # The webhook got the notifications (the first attempt's 503 was retried) with our header.
    assert hook.attempts == 3
    assert [(b["type"], b["payload"]["rule"], b["payload"]["state"]) for b in hook.bodies] == [
        ("alert", "smoke", "on"), ("alert", "smoke", "off")]
    assert hook.bodies[0] == next(e for e in got if e["payload"]["state"] == "on")
    assert all(h.get("Authorization") == "Bearer s3cret" for h in hook.headers)
    # While smoke was on, frames carried an alert caption; the last frame no longer does.
    on_at = by_rule(got, "smoke")[1]["frame_index"]
    captioned = [f.index for f in frames if isinstance(f.results.get("alerts"), AlertStatus)
                 and f.results["alerts"].caption() is not None]
    assert captioned and min(captioned) > on_at
    assert frames[-1].results["alerts"].caption() is None
    assert report["processors"]["alerts"]["transitions"] == 4


def test_transitions_reach_a_real_mqtt_broker(tmp_path: Path, mosquitto: Broker) -> None:  # noqa: F811
    listener = Listener(mosquitto.port, "cam1/#")
    try:
        backend = ScriptedVLM(SCRIPT)
        events = tmp_path / "events.jsonl"
        run_alerts(backend, "-c", f"alerts-rules={RULES}", "-c", f"alerts-mqtt=mqtt://127.0.0.1:{mosquitto.port}/cam1",
                   "-c", "alerts-snapshot=inline", events=events)
        got = alert_events(events)
        assert wait_for(lambda: len(listener.on("cam1/events")) == len(got))
        assert listener.json_on("cam1/events") == got  # every transition, in order, as on --events
        first = got[0]["payload"]
        assert frame_of(decode_image(base64.b64decode(first["snapshot_base64"]))) == first["frame_index"]
        assert wait_for(lambda: [p for _, p, _, _ in listener.on("cam1/status")][-1:] == [b"offline"])
        assert [p for _, p, _, _ in listener.on("cam1/status")][0] == b"online"
    finally:
        listener.close()
    # A client that connects later gets every rule's newest state from the retained messages.
    late = Listener(mosquitto.port, "cam1/alerts/+")
    try:
        assert wait_for(lambda: len(late.messages) == 2)
        retained = {t.rsplit("/", 1)[1]: (json.loads(p)["payload"]["state"], r) for t, p, _, r in late.messages}
        assert retained == {"smoke": ("off", True), "person": ("off", True)}
    finally:
        late.close()


def test_mqtt_notifier_reconnects_after_the_broker_restarts(mosquitto: Broker,  # noqa: F811
                                                            caplog: pytest.LogCaptureFixture) -> None:
    states: dict[str, dict[str, Any]] = {}
    notifier = MqttNotifier(parse_mqtt_url(f"mqtt://127.0.0.1:{mosquitto.port}/site"), processor_id="alerts",
                            current=lambda: list(states.values()))
    bus = EventBus()
    bus.subscribe(notifier)

    def transition(rule: str, state: str) -> None:
        event = Event("alert", {"processor": "alerts", "rule": rule, "state": state, "notify": True})
        states[rule] = event.to_dict()
        bus.emit(event)

    caplog.set_level(logging.INFO, logger="framelens.alerts")
    notifier.start()
    try:
        assert notifier.wait_connected(10)
        transition("smoke", "on")
        listener = Listener(mosquitto.port, "site/alerts/+")
        assert wait_for(lambda: listener.json_on("site/alerts/smoke")[-1:] != [])
        listener.close()
        mosquitto.stop()
        assert wait_for(lambda: not notifier.wait_connected(0), 10)
        transition("smoke", "off")  # published while the broker is away: kept by paho
        transition("door", "on")
        mosquitto.start()  # without persistence: everything retained before is gone
        assert notifier.wait_connected(40)
        listener = Listener(mosquitto.port, "site/alerts/+")
        try:
            assert wait_for(lambda: {e["payload"]["rule"]: e["payload"]["state"]
                                     for e in listener.json_on("site/alerts/smoke")
                                     + listener.json_on("site/alerts/door")} == {"smoke": "off", "door": "on"})
        finally:
            listener.close()
        assert "lost the connection" in caplog.text and "reconnected to" in caplog.text
    finally:
        notifier.close()


def test_a_backend_outage_makes_rules_unknown_once_and_evaluation_resumes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = {"smoke": lambda i: i >= 20, "floor": lambda i: False}
    backend = ScriptedVLM(script, down=lambda i: 60 <= i <= 100)
    events = tmp_path / "events.jsonl"
    caplog.set_level(logging.INFO, logger="framelens.alerts")
    report, _, proc = run_alerts(backend, "-c", "alerts-rules=Is there smoke?;Is a person on the floor?",
                                 "-c", "alerts-unknown-after=1", "-c", "alerts-snapshot=none", events=events)
    assert report["frames"] == 200
    got = alert_events(events)
    smoke = [(p["previous"], p["state"], p["notify"]) for p in by_rule(got, "r0")]
    # The outage ends the announced episode in 'unknown'; its return within the cooldown stays quiet.
    assert smoke == [("unknown", "off", False), ("off", "on", True), ("on", "unknown", True),
                     ("unknown", "on", False)]
    assert [p["state"] for p in by_rule(got, "r1")] == ["off", "unknown", "off"]
    unknown = next(p for p in by_rule(got, "r0") if p["state"] == "unknown")
    assert 60 <= unknown["frame_index"] <= 100 and "connection refused" in unknown["error"]
    assert "snapshot_path" not in unknown
    back = by_rule(got, "r0")[-1]
    assert back["frame_index"] > 100 and back["suppressed"] is True
    assert caplog.text.count("connection refused") == 1  # one log line for the outage, not one per rule or try
    assert caplog.text.count("answers again") == 1
    assert max(backend.seen) > 100 and proc.engine.view("r0")[0]["state"] == "on"


class FrameCounter:
    """A processor after ``alerts`` that counts the frames passing it."""

    def __init__(self) -> None:
        self.count = 0

    @hookimpl
    def register_processors(self, register: RegisterFn) -> None:
        outer = self

        class Count(Processor):
            def process(self, frame: Frame) -> Frame:
                outer.count += 1
                return frame

        register("count", lambda options, context: Count(), help="test frame counter")


def test_a_hanging_backend_and_a_dead_webhook_never_block_the_video(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    counter = FrameCounter()
    seen_while_waiting: list[int] = []
    gate = async_gate(lambda: counter.count >= 60, timeout=20)

    async def hold() -> None:
        await gate()
        seen_while_waiting.append(counter.count)

    backend = ScriptedVLM({"smoke": lambda i: True}, gate=hold)
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    caplog.set_level(logging.INFO, logger="framelens.alerts")
    report, frames, proc = run_alerts(
        backend, "-p", "count", "-c", "alerts-rules=Is there smoke?", "-c", f"alerts-webhook={dead}",
        "-c", "alerts-webhook-attempts=2", "-c", "alerts-webhook-timeout=0.5", "-c", "alerts-snapshot=none",
        frames=100, extra_plugin=counter)
    # The first evaluation was held until 60 frames had passed the stages after alerts.
    assert seen_while_waiting and seen_while_waiting[0] >= 60 and backend.seen[0] < 60
    assert report["frames"] == 100 == counter.count
    assert proc.engine.view()[0]["state"] == "on"
    assert "gave up on the on event of rule r0 after 2 attempts" in caplog.text


def test_rules_survive_a_restart_through_the_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "rules.json"
    backend = ScriptedVLM({"smoke": lambda i: False})
    _, _, proc = run_alerts(backend, "-c", "alerts-rules=Is there smoke?", "-c", f"alerts-store={store}",
                            "-c", "alerts-snapshot=none", frames=5)
    assert [r["prompt"] for r in json.loads(store.read_text())["rules"]] == ["Is there smoke?"]
    # A change made at run time (what POST /v1/alerts does) is stored at once...
    proc.engine.set_rules([{"id": "door", "prompt": "Is the door open?", "cooldown": 5}])
    caplog.set_level(logging.WARNING, logger="framelens.alerts")
    # ...and wins over the configured rules at the next start.
    _, _, proc = run_alerts(backend, "-c", "alerts-rules=Is there smoke?", "-c", f"alerts-store={store}",
                            "-c", "alerts-snapshot=none", frames=5)
    assert [(v["id"], v["cooldown"]) for v in proc.engine.view()] == [("door", 5.0)]
    assert "using the 1 rules stored in" in caplog.text
    # A damaged file is reported and set aside, and the previous copy is used.
    store.write_text("{ not json")
    caplog.clear()
    _, _, proc = run_alerts(backend, "-c", f"alerts-store={store}", "-c", "alerts-snapshot=none", frames=5)
    assert [v["id"] for v in proc.engine.view()] == ["r0"]  # the copy before the last change
    assert "is damaged (invalid JSON" in caplog.text
    assert [p.read_text() for p in tmp_path.glob("rules.json.corrupt-*")] == ["{ not json"]


def test_captions_draw_active_alerts_as_a_red_banner(tmp_path: Path) -> None:
    backend = ScriptedVLM({"smoke": lambda i: 30 <= i <= 80})
    report, frames, _ = run_alerts(backend, "-c", "alerts-rules=Is there smoke?", "-p", "captions",
                                   "-c", "alerts-snapshot=none", frames=120)
    alerted = [f for f in frames if f.results["alerts"].caption() is not None]
    calm = [f for f in frames if f.results["alerts"].caption() is None]
    assert alerted and calm
    for group, red in ((alerted[:3], True), (calm[-3:], False)):
        for f in group:
            top = f.image[:6, :, :].reshape(-1, 3).mean(axis=0)
            assert bool(top[2] > 150 and top[0] < 60) is red, (f.index, top)


@pytest.mark.parametrize("setting, message", [
    ("alerts-rules=Is there smoke?;;Is it raining?", "rules[1]: the prompt must not be empty"),
    ('alerts-rules=[{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]', "duplicate rule id 'a'"),
    ("alerts-rules=a;b;c", "3 rules is more than the limit of 2"),
    ("alerts-rules=" + "x" * 30, "30 characters is longer than the limit of 20"),
    ('alerts-rules=[{"id": "a", "prompt": "x", "priority": 1}]', "unknown field 'priority'"),
    ("alerts-backend=olama", "unknown backend 'olama'"),
])
def test_bad_rules_on_the_command_line_exit_2(setting: str, message: str) -> None:
    result = run_cli(["run", "-s", "testpattern", "-o", "none", "--max-frames", "1", "-p", "alerts",
                      "-c", "alerts-max-rules=2", "-c", "alerts-max-prompt-chars=20", "-c", setting])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_two_alerts_processors_keep_apart_by_id() -> None:
    ok = run_cli(["run", "-s", "testpattern", "-o", "none", "--max-frames", "1", "-p", "alerts",
                  "-p", "alerts:second", "-c", "alerts-rules=a", "-c", "second-rules=b", "-c", "alerts-backend=nim",
                  "-c", "second-backend=nim", "-c", "nim-url=http://127.0.0.1:9/v1"])
    assert ok.returncode == 0, ok.stderr
    clash = run_cli(["run", "-s", "testpattern", "-o", "none", "--max-frames", "1", "-p", "alerts",
                     "-p", "alerts:second", "-c", "alerts-rules=a", "-c", "second-rules=b",
                     "-c", "second-result-key=alerts"])
    assert clash.returncode == 2 and "change the result-key option" in clash.stderr



def test_rules_from_a_deployment_file(tmp_path: Path) -> None:
    deployment = tmp_path / "alerts.yaml"
    deployment.write_text(
        "source: testpattern\n"
        "processors:\n"
        "  - alerts:\n"
        "      backend: scripted\n"
        "      interval: 0\n"
        "      snapshot: none\n"
        "      rules:\n"
        "        - id: smoke\n"
        "          prompt: Is there smoke?\n"
        "          on-frames: 2\n"
        "          severity: critical\n"
        "        - Is the door open?\n"
        "outputs: [none]\n"
        "options: {testpattern-fps: 50, testpattern-width: 320, testpattern-height: 240}\n")
    backend = ScriptedVLM({"smoke": lambda i: i >= 5, "door": lambda i: False})
    with backend_registered("scripted", backend):
        report, _, runtime = run_pipeline(["-f", str(deployment), "--max-frames", "40"])
    proc = runtime.stages[0].processor
    assert isinstance(proc, AlertsProcessor) and report["frames"] == 40
    views = {v["id"]: v for v in proc.engine.view()}
    assert (views["smoke"]["on_frames"], views["smoke"]["severity"], views["smoke"]["state"]) == (2, "critical", "on")
    assert (views["r0"]["prompt"], views["r0"]["state"]) == ("Is the door open?", "off")


def test_bad_rules_in_a_deployment_file_name_the_file(tmp_path: Path) -> None:
    deployment = tmp_path / "alerts.yaml"
    deployment.write_text("source: testpattern\nprocessors:\n  - alerts:\n      rules:\n"
                          "        - {id: smoke, prompt: 'Is there smoke?', cooldown: -1}\noutputs: [none]\n")
    result = run_cli(["run", "-f", str(deployment), "--max-frames", "1"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "alerts.yaml: processors[0]" in result.stderr and "rules[0].cooldown" in result.stderr
