"""Unit tests of the alerts plugin: rules, parsing, the state machine, the store, the evaluator, the engine."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alerts_helpers import WebhookReceiver
from prometheus_client import CollectorRegistry

from framelens import (
    AsyncRunner,
    BackendError,
    Caption,
    ConfigError,
    Event,
    EventBus,
    Frame,
    ImagePart,
    captions_of,
)
from framelens.options import parse_options
from framelens.plugins.alerts.engine import AlertEngine, RuleDefaults
from framelens.plugins.alerts.evaluator import Evaluation, Evaluator, RuleAnswer, batch_schema
from framelens.plugins.alerts.machine import MachineSettings, RuleMachine
from framelens.plugins.alerts.metrics import AlertMetrics
from framelens.plugins.alerts.mqtt import parse_mqtt_url
from framelens.plugins.alerts.parsing import parse_batch_answer, parse_yes_no
from framelens.plugins.alerts.processor import AlertsOptions
from framelens.plugins.alerts.rules import RuleError, RuleLimits, build_rules, split_rules_text
from framelens.plugins.alerts.snapshots import Snapshotter
from framelens.plugins.alerts.sse import SseBroadcaster
from framelens.plugins.alerts.store import RuleStore, StoreError
from framelens.plugins.alerts.webhook import WebhookNotifier
from framelens.testing import FakeBackend, FakeRequest

LIMITS = RuleLimits(max_rules=5, max_prompt_chars=40)


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("yes", True), ("Yes.", True), ("YES!", True), (" yes\n", True), ("**Yes**", True), ('"yes"', True),
    ("True", True), ("true.", True), ("Yes, there is smoke in the kitchen.", True), ("Answer: yes", True),
    ("no", False), ("No.", False), ("NO!!", False), ("False", False), ("no, nobody is on the floor", False),
    ("<think>The floor looks empty, so yes? no.</think>No", False), ("Response: NO", False),
    ("", None), ("maybe", None), ("The image shows a kitchen.", None), ("Yes/No", None), ("yes no", None),
    ("Yes. No smoke.", None), ("1", None), ("noted", None), ("yesterday", None), ("<think>unfinished", None),
])
def test_parse_yes_no(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


def test_parse_batch_answer_takes_booleans_and_yes_no_strings() -> None:
    ids = ["smoke", "person", "fire", "door"]
    text = '```json\n{"smoke": true, "person": "No", "fire": 1}\n```'
    assert parse_batch_answer(text, ids) == {"smoke": True, "person": False, "fire": None, "door": None}
    wrapped = 'Here you go: {"smoke": false, "person": true, "fire": "maybe", "door": true} done'
    assert parse_batch_answer(wrapped, ids) == {"smoke": False, "person": True, "fire": None, "door": True}
    assert parse_batch_answer("yes", ids) == dict.fromkeys(ids)
    assert parse_batch_answer('["smoke"]', ids) == dict.fromkeys(ids)


# -- rules -----------------------------------------------------------------------------------


def test_plain_strings_get_jetson_style_ids_and_objects_keep_theirs() -> None:
    rules = build_rules(["Is there smoke?", {"id": "r0", "prompt": "Fire?"}, "Person?"], LIMITS)
    assert [(r.id, r.prompt) for r in rules] == [("r1", "Is there smoke?"), ("r0", "Fire?"), ("r2", "Person?")]
    added = build_rules(["Door open?"], LIMITS, taken_ids=["r0", "r1"])
    assert added[0].id == "r2"


def test_rule_fields_accept_both_spellings_and_fill_defaults() -> None:
    (rule,) = build_rules([{"id": "smoke", "prompt": "  Smoke?  ", "on-frames": 2, "off_frames": 3,
                            "severity": "critical", "cooldown": 5, "interval": 0.5}], LIMITS)
    assert (rule.prompt, rule.on_frames, rule.off_frames, rule.severity) == ("Smoke?", 2, 3, "critical")
    assert rule.public() == {"id": "smoke", "prompt": "Smoke?", "interval": 0.5, "cooldown": 5.0,
                             "on_frames": 2, "off_frames": 3, "severity": "critical"}


@pytest.mark.parametrize("items, message", [
    (["ok", "  "], "alerts[1]: the prompt must not be empty"),
    ([{"id": "a", "prompt": ""}], "alerts[0].prompt: the prompt must not be empty"),
    ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "alerts[1].id: duplicate rule id 'a'"),
    (["a", "b", "c", "d", "e", "f"], "6 rules is more than the limit of 5"),
    (["x" * 41], "alerts[0].prompt: 41 characters is longer than the limit of 40"),
    ([{"id": "a", "prompt": "x", "colour": "red"}], "alerts[0].colour: unknown field 'colour'"),
    ([{"prompt": "x"}], "alerts[0].id: field 'id' is required"),
    ([{"id": "a/b", "prompt": "x"}], "invalid rule id 'a/b'"),
    ([{"id": "events", "prompt": "x"}], "reserved"),
    ([{"id": "a", "prompt": "x", "on_frames": 0}], "alerts[0].on_frames: Input should be greater than or equal to 1"),
    ([{"id": "a", "prompt": "x", "severity": "loud"}], "alerts[0].severity"),
    ([42], "alerts[0]: expected a prompt string or a rule object, got int"),
    ("Is there smoke?", "expected a list"),
])
def test_bad_rules_are_rejected_with_a_clear_message(items: Any, message: str) -> None:
    with pytest.raises(RuleError) as info:
        build_rules(items, LIMITS)
    assert message in str(info.value)


def test_split_rules_text() -> None:
    assert split_rules_text("Is there smoke?;Is a person on the floor?") == ["Is there smoke?",
                                                                            "Is a person on the floor?"]
    assert split_rules_text(r"Smoke\; or fire?;Door?") == ["Smoke; or fire?", "Door?"]
    assert split_rules_text('[{"id": "s", "prompt": "Smoke?"}, "Door?"]') == [{"id": "s", "prompt": "Smoke?"}, "Door?"]
    assert split_rules_text("   ") == []
    with pytest.raises(RuleError, match="look like JSON"):
        split_rules_text('[{"id": ')


def test_options_parse_rules_from_cli_and_yaml_and_reject_bad_ones() -> None:
    opts = parse_options(AlertsOptions, {"rules": "Is there smoke?;Is a person on the floor?"}, namespace="alerts")
    assert isinstance(opts, AlertsOptions)
    assert [(r.id, r.prompt) for r in opts.rules] == [("r0", "Is there smoke?"), ("r1", "Is a person on the floor?")]
    yaml_rules = [{"id": "smoke", "prompt": "Smoke?", "on_frames": 2}, "Door open?"]
    opts = parse_options(AlertsOptions, {"rules": yaml_rules, "max-rules": "3"}, namespace="alerts")
    assert isinstance(opts, AlertsOptions)
    assert [r.id for r in opts.rules] == ["smoke", "r0"]
    with pytest.raises(ConfigError, match=r"bad value for 'alerts-rules'.*rules\[1\]: the prompt must not be empty"):
        parse_options(AlertsOptions, {"rules": "a;;b"}, namespace="alerts")
    with pytest.raises(ConfigError, match="3 rules is more than the limit of 2"):
        parse_options(AlertsOptions, {"rules": "a;b;c", "max-rules": 2}, namespace="alerts")
    with pytest.raises(ConfigError, match="alerts-webhook.*http:// or https://"):
        parse_options(AlertsOptions, {"webhook": "ftp://x"}, namespace="alerts")
    with pytest.raises(ConfigError, match="alerts-mqtt.*mqtt://host"):
        parse_options(AlertsOptions, {"mqtt": "tcp://x"}, namespace="alerts")
    with pytest.raises(ConfigError, match="alerts-webhook-header.*Name: value"):
        parse_options(AlertsOptions, {"webhook-header": "no colon"}, namespace="alerts")


def test_parse_mqtt_url() -> None:
    t = parse_mqtt_url("mqtt://user:p%40ss@broker.local:1884/home/cam1")
    assert (t.host, t.port, t.prefix, t.username, t.password, t.tls) == ("broker.local", 1884, "home/cam1",
                                                                        "user", "p@ss", False)
    t = parse_mqtt_url("mqtts://broker")
    assert (t.port, t.prefix, t.tls) == (8883, "framelens", True)
    for bad in ("http://x", "mqtt://", "mqtt://h:99999/x", "mqtt://h/a/+/b"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


# -- the state machine -----------------------------------------------------------------------


_clock: dict[int, float] = {}


def feed(m: RuleMachine, results: Sequence[bool | None], start: float | None = None, step: float = 1.0) -> list[str]:
    """Feed results ``step`` seconds apart, continuing the machine's clock unless ``start`` is given;
    the transitions as 'prev>state!' (! = notify)."""
    now = _clock.get(id(m), 0.0) if start is None else start
    out = []
    for r in results:
        t = m.feed(r, now)
        if t is not None:
            out.append(f"{t.previous}>{t.state}" + ("!" if t.notify else ""))
        now += step
    _clock[id(m)] = now
    return out


def test_debouncing_needs_consecutive_answers() -> None:
    m = RuleMachine(MachineSettings(on_frames=3, off_frames=2, cooldown=0))
    assert feed(m, [False, False]) == ["unknown>off"]
    assert feed(m, [True, True, False, True, True]) == []  # a 'no' breaks the run of yes
    assert feed(m, [True]) == ["off>on!"]
    assert feed(m, [False, True, False]) == []
    assert feed(m, [False]) == ["on>off!"]


def test_unknown_answers_neither_count_nor_break_a_run_until_unknown_after() -> None:
    m = RuleMachine(MachineSettings(on_frames=2, off_frames=1, cooldown=0, unknown_after=3))
    assert feed(m, [False, True, None, True]) == ["unknown>off", "off>on!"]
    assert feed(m, [None, None]) == []
    assert feed(m, [None]) == ["on>unknown!"]  # the notified episode ends in unknown: tell people
    # Back from unknown needs fresh evidence: on_frames new yes answers.
    assert feed(m, [True]) == []
    assert feed(m, [True]) == ["unknown>on!"]
    # The episode announced by "on" closes with the first known state after it.
    assert feed(m, [None, None, None, False]) == ["on>unknown!", "unknown>off!"]


def test_cooldown_holds_back_repeated_notifications_but_not_state() -> None:
    m = RuleMachine(MachineSettings(cooldown=60))
    assert feed(m, [True], start=0) == ["unknown>on!"]
    assert feed(m, [False], start=10) == ["on>off!"]
    t = m.feed(True, 20)  # within 60 s of the last notified 'on'
    assert t is not None and (t.state, t.notify, t.suppressed) == ("on", False, True)
    assert m.state == "on"
    t = m.feed(False, 30)
    assert t is not None and (t.state, t.notify) == ("off", False)  # its episode was never announced
    assert feed(m, [True], start=61) == ["off>on!"]  # cooldown over
    d = m.delete(70)
    assert (d.previous, d.state, d.notify) == ("on", "deleted", True)


def test_cooldown_counts_from_the_last_notified_on_and_unknown_keeps_the_episode_open() -> None:
    m = RuleMachine(MachineSettings(cooldown=30, unknown_after=1))
    assert feed(m, [True, None, True, False], start=0, step=5) == ["unknown>on!", "on>unknown!", "unknown>on",
                                                                   "on>off!"]


# -- the store -------------------------------------------------------------------------------


def test_store_round_trip_keeps_a_previous_copy_and_no_temp_files(tmp_path: Path) -> None:
    store = RuleStore(tmp_path / "rules.json", LIMITS)
    assert store.load() is None
    first = build_rules(["Smoke?"], LIMITS)
    store.save(first)
    second = build_rules([{"id": "door", "prompt": "Door open?", "cooldown": 5}], LIMITS)
    store.save(second)
    loaded = store.load()
    assert loaded is not None and loaded.rules == second
    assert json.loads((tmp_path / "rules.json.bak").read_text())["rules"] == [{"id": "r0", "prompt": "Smoke?",
                                                                               "severity": "warning"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.json", "rules.json.bak"]


def test_a_corrupt_store_is_reported_kept_and_the_previous_copy_used(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rules.json"
    store = RuleStore(path, LIMITS)
    store.save(build_rules(["Smoke?"], LIMITS))
    store.save(build_rules(["Smoke?", "Fire?"], LIMITS))
    path.write_text('{"version": 1, "rules": [{"id": "r0", "prom')  # a torn write by some other tool
    with caplog.at_level(logging.ERROR, logger="framelens.alerts"):
        loaded = RuleStore(path, LIMITS).load()
    assert loaded is not None and [r.prompt for r in loaded.rules] == ["Smoke?"]
    assert "is damaged (invalid JSON" in caplog.text and "restored 1 rules from the previous copy" in caplog.text
    kept = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and kept[0].read_text().startswith('{"version": 1, "rules": [{"id": "r0", "prom')
    assert [r.prompt for r in (RuleStore(path, LIMITS).load() or pytest.fail("lost")).rules] == ["Smoke?"]


def test_a_store_whose_copies_are_both_bad_loads_nothing_but_keeps_both(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [{"id": "a", "prompt": ""}]}))
    (tmp_path / "rules.json.bak").write_text("\x00\x01")
    with caplog.at_level(logging.ERROR, logger="framelens.alerts"):
        assert RuleStore(path, LIMITS).load() is None
    assert "the prompt must not be empty" in caplog.text
    assert len([p for p in tmp_path.iterdir() if ".corrupt-" in p.name]) == 2


# -- the evaluator ---------------------------------------------------------------------------


def script_backend(answers: dict[str, Any], *, schema: bool, fail: Exception | None = None) -> FakeBackend:
    """A FakeBackend answering from a dict prompt -> text; it records every request."""

    def answer(request: FakeRequest) -> str:
        if request.params.json_schema is not None:
            props = request.params.json_schema["properties"]
            return json.dumps({k: answers[v["description"]] for k, v in props.items()})
        return str(answers[request.messages[-1].text().split("\n")[0]])

    supports = {"images", "max_tokens", "temperature"} | ({"json_schema"} if schema else set())
    return FakeBackend(answer, models=[], supports=supports, fail=fail)


IMAGE = ImagePart(data=b"\xff\xd8\xff fake jpeg", mime="image/jpeg")


def test_batched_evaluation_sends_one_schema_request_for_all_rules() -> None:
    rules = build_rules([{"id": "smoke", "prompt": "Smoke?"}, {"id": "door", "prompt": "Door?"}], LIMITS)
    backend = script_backend({"Smoke?": "yes", "Door?": False}, schema=True)
    ev = asyncio.run(Evaluator(backend).evaluate(IMAGE, rules))
    assert (ev.mode, ev.requests) == ("batch", 1) and len(backend.requests) == 1
    assert {k: a.result for k, a in ev.answers.items()} == {"smoke": True, "door": False}
    messages, params = backend.requests[0].messages, backend.requests[0].params
    assert params.json_schema == batch_schema(rules) and params.json_schema["required"] == ["smoke", "door"]
    assert params.temperature == 0.0 and params.max_tokens is not None
    assert messages[-1].parts()[0] is IMAGE and "- smoke: Smoke?" in messages[-1].text()


def test_per_rule_evaluation_without_structured_output_and_unknown_answers() -> None:
    rules = build_rules([{"id": "smoke", "prompt": "Smoke?"}, {"id": "door", "prompt": "Door?"}], LIMITS)
    backend = script_backend({"Smoke?": "Yes.", "Door?": "I cannot tell from this image"}, schema=False)
    ev = asyncio.run(Evaluator(backend, mode="auto").evaluate(IMAGE, rules))
    assert (ev.mode, ev.requests, len(backend.requests)) == ("per-rule", 2, 2)
    assert ev.answers["smoke"] == RuleAnswer(True, "Yes.")
    assert ev.answers["door"].result is None and ev.answers["door"].answer == "I cannot tell from this image"
    # The image and system prompt come first and are identical: servers can reuse the prefix.
    (m1, p1), (m2, _) = [(r.messages, r.params) for r in backend.requests]
    assert m1[0] == m2[0] and m1[1].parts()[0] is IMAGE and m2[1].parts()[0] is IMAGE
    assert "yes or no" in m1[1].text() and p1.json_schema is None and p1.max_tokens == 8


def test_a_failing_backend_gives_unknown_answers_not_an_exception() -> None:
    rules = build_rules(["Smoke?", "Door?"], LIMITS)
    down = BackendError("cannot reach http://127.0.0.1:9/", kind="unreachable")
    for schema in (True, False):
        ev = asyncio.run(Evaluator(script_backend({}, schema=schema, fail=down)).evaluate(IMAGE, rules))
        assert ev.backend_failed
        assert all(a.result is None and "cannot reach" in (a.error or "") for a in ev.answers.values())


# -- the engine ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_engine(tmp_path: Path, *, store: bool = False, **defaults: Any) -> tuple[AlertEngine, list[Event], Clock,
                                                                                   list[Any]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    statuses: list[Any] = []
    clock = Clock()
    engine = AlertEngine(
        "alerts", defaults=RuleDefaults(**defaults), limits=LIMITS, events=bus,
        metrics=AlertMetrics(CollectorRegistry()), snapshotter=Snapshotter("path", tmp_path / "snaps", 3),
        store=RuleStore(tmp_path / "rules.json", LIMITS) if store else None, publish_status=statuses.append,
        backend_name="fake", clock=clock,
    )
    engine.snapshotter.start()
    return engine, events, clock, statuses


def answer(engine: AlertEngine, index: int, results: dict[str, bool | None]) -> None:
    due = engine.take_due()
    ev = Evaluation({k: RuleAnswer(v, "yes" if v else "no") for k, v in results.items()}, 0.25, "batch", 1)
    frame = Frame(np.zeros((8, 8, 3), np.uint8), index, 1_700_000_000.0 + index)
    engine.apply(frame, b"\xff\xd8\xffjpeg", due, ev)


def test_engine_schedules_by_interval_and_publishes_transitions_with_snapshots(tmp_path: Path) -> None:
    engine, events, clock, statuses = make_engine(tmp_path, interval=2.0)
    engine.set_rules([{"id": "smoke", "prompt": "Smoke?", "interval": 0}, "Door?"])
    assert engine.next_due_at <= clock.now
    assert [d.rule.id for d in engine.take_due()] == ["smoke", "r0"]
    assert [d.rule.id for d in engine.take_due()] == ["smoke"]  # r0 waits its 2 s
    clock.now += 2
    answer(engine, 7, {"smoke": True, "r0": False})
    (on, off) = [e.payload for e in events]
    assert (on["rule"], on["state"], on["previous"], on["notify"], on["frame_index"]) == ("smoke", "on", "unknown",
                                                                                         True, 7)
    assert on["capture_time"] == 1_700_000_007.0 and on["latency_s"] == 0.25 and on["prompt"] == "Smoke?"
    assert Path(on["snapshot_path"]).read_bytes() == b"\xff\xd8\xffjpeg" and on["snapshot_path"] == off["snapshot_path"]
    assert (off["rule"], off["state"], off["notify"]) == ("r0", "off", False)
    assert statuses[-1].caption() == Caption("ALERT: Smoke?", "alert")
    view = {v["id"]: v for v in engine.view()}
    assert view["smoke"]["state"] == "on" and view["smoke"]["last_result"] == "true"
    assert view["r0"]["interval"] == 2.0 and view["r0"]["last_frame_index"] == 7


def test_engine_changes_apply_on_the_next_evaluation_and_keep_unchanged_rules_state(tmp_path: Path) -> None:
    engine, events, clock, statuses = make_engine(tmp_path, interval=0)
    engine.set_rules([{"id": "smoke", "prompt": "Smoke?"}, {"id": "door", "prompt": "Door?"}])
    answer(engine, 1, {"smoke": True, "door": True})
    in_flight = engine.take_due()
    # While the VLM thinks: smoke keeps its prompt (new cooldown), door gets a new question.
    engine.set_rules([{"id": "smoke", "prompt": "Smoke?", "cooldown": 1}, {"id": "door", "prompt": "Door ajar?"}])
    deleted = [e.payload for e in events if e.payload["state"] == "deleted"]
    assert [(d["rule"], d["previous"], d["notify"], d["reason"]) for d in deleted] == [("door", "on", True,
                                                                                        "prompt changed")]
    states = {v["id"]: v["state"] for v in engine.view()}
    assert states == {"smoke": "on", "door": "unknown"}
    before = len(events)
    ev = Evaluation({"smoke": RuleAnswer(False), "door": RuleAnswer(False)}, 0.1, "batch", 1)
    engine.apply(Frame(np.zeros((8, 8, 3), np.uint8), 2, 0.0), b"j", in_flight, ev)
    # The stale answer for the old door question is dropped; smoke's counts.
    assert [(e.payload["rule"], e.payload["state"]) for e in events[before:]] == [("smoke", "off")]
    assert engine.delete("nope") == [] and engine.delete("smoke") == ["smoke"]
    assert engine.delete() == ["door"] and engine.view() == [] and statuses[-1].caption() is None


def test_engine_add_mode_and_limits(tmp_path: Path) -> None:
    engine, _, _, _ = make_engine(tmp_path)
    engine.set_rules(["A?", "B?"])
    engine.set_rules(["C?", {"id": "r0", "prompt": "A again?"}], mode="add")
    assert [(v["id"], v["prompt"]) for v in engine.view()] == [("r0", "A again?"), ("r1", "B?"), ("r2", "C?")]
    with pytest.raises(RuleError, match="6 rules is more than the limit of 5"):
        engine.set_rules(["D?", "E?", "F?"], mode="add")
    assert len(engine.view()) == 3
    engine.put_rule("door", {"prompt": "Door?", "severity": "info"})
    with pytest.raises(RuleError, match="the body says 'x' but the URL says 'door'"):
        engine.put_rule("door", {"id": "x", "prompt": "Door?"})


def test_engine_persists_every_change_and_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    engine, _, _, _ = make_engine(tmp_path, store=True)
    engine.set_rules(["Smoke?"])
    engine.put_rule("door", {"prompt": "Door?"})
    stored = json.loads((tmp_path / "rules.json").read_text())["rules"]
    assert [r["id"] for r in stored] == ["r0", "door"]
    (tmp_path / "rules.json.bak").unlink()
    (tmp_path / "rules.json.bak").mkdir()  # the previous copy cannot be written (even as root)
    with pytest.raises(StoreError, match="cannot write the alerts store"):
        engine.delete("door")
    assert [v["id"] for v in engine.view()] == ["r0", "door"]  # not applied: nothing diverges from disk


def test_engine_logs_a_backend_outage_once_and_backs_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine, events, clock, _ = make_engine(tmp_path, interval=0, unknown_after=2)
    engine.set_rules(["Smoke?", "Door?"])
    answer(engine, 0, {"r0": True, "r1": False})
    down = BackendError("cannot reach the backend", kind="unreachable")
    frame = Frame(np.zeros((8, 8, 3), np.uint8), 1, 0.0)
    with caplog.at_level(logging.INFO, logger="framelens.alerts"):
        for i in range(4):
            due = engine.take_due()
            engine.apply(frame, b"j", due, Evaluation.failure([d.rule for d in due], down, 0.01, "batch"))
            assert engine.retry_at == clock.now + min(30, 2 ** i)
        answer(engine, 2, {"r0": True, "r1": False})
    assert caplog.text.count("cannot reach the backend") == 1
    assert caplog.text.count("answers again") == 1 and engine.retry_at == 0
    unknown = [e.payload for e in events if e.payload["state"] == "unknown"]
    assert [(u["rule"], u["error"]) for u in unknown] == [("r0", "cannot reach the backend"),
                                                          ("r1", "cannot reach the backend")]


def test_alert_status_caption_lists_active_rules_most_severe_first(tmp_path: Path) -> None:
    engine, _, _, statuses = make_engine(tmp_path, interval=0)
    engine.set_rules([{"id": "a", "prompt": "Person on the floor?"}, {"id": "b", "prompt": "Smoke?",
                                                                        "severity": "critical"}])
    answer(engine, 0, {"a": True, "b": True})
    status = statuses[-1]
    assert status.caption() == Caption("ALERT: Smoke? | Person on the floor?", "alert")
    assert captions_of({"alerts": status}) == [("alerts", Caption("ALERT: Smoke? | Person on the floor?", "alert"))]
    assert status.states == {"a": "on", "b": "on"}


def test_snapshots_are_bounded_in_number(tmp_path: Path) -> None:
    snaps = Snapshotter("path", tmp_path, keep=2)
    snaps.start()
    paths = [snaps.attach(b"jpeg%d" % i, i, 1_700_000_000.0)["snapshot_path"] for i in range(4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(p).name for p in paths[2:])
    inline = Snapshotter("inline", tmp_path, 1).attach(b"abc", 0, 0.0)
    assert inline == {"snapshot_base64": "YWJj", "snapshot_type": "image/jpeg"}
    assert Snapshotter("none", tmp_path, 1).attach(b"abc", 0, 0.0) == {}


def test_sse_broadcaster_replays_after_last_event_id() -> None:
    sse = SseBroadcaster("alerts", history=3)
    for i in range(5):
        sse(Event("alert", {"processor": "alerts", "rule": f"r{i}", "state": "on"}))
    sse(Event("alert", {"processor": "other", "rule": "x"}))
    sse(Event("description", {"processor": "alerts"}))

    async def read(last: str | None) -> list[str]:
        chunks = []
        stream = sse.stream(last)
        chunks.append(await stream.__anext__())
        sse.close()
        async for chunk in stream:
            chunks.append(chunk)
        return chunks

    chunks = asyncio.run(read("3"))
    assert chunks[0] == "retry: 2000\n\n"
    assert [c.split("\n")[0] for c in chunks[1:]] == ["id: 4", "id: 5"]
    assert json.loads(chunks[2].split("data: ", 1)[1])["payload"]["rule"] == "r4"


# -- the webhook notifier --------------------------------------------------------------------


def _deliver(receiver: WebhookReceiver, events: list[Event], **knobs: Any) -> WebhookNotifier:
    runner = AsyncRunner("test-webhook")
    notifier = WebhookNotifier(receiver.url, runner=runner, processor_id="alerts", backoff=0.05, **knobs)
    notifier.start()
    try:
        for event in events:
            notifier(event)
        notifier.close(timeout=10)
    finally:
        runner.stop()
    return notifier


def _alert(rule: str, state: str, notify: bool = True, processor: str = "alerts") -> Event:
    return Event("alert", {"processor": processor, "rule": rule, "state": state, "notify": notify})


def test_webhook_sends_notifications_in_order_and_honours_retry_after() -> None:
    events = [_alert("a", "on"), _alert("b", "off", notify=False), _alert("a", "off"),
              _alert("a", "on", processor="other"), Event("description", {"processor": "alerts"})]
    with WebhookReceiver(fail_first=1, fail_status=429, retry_after="1") as hook:
        notifier = _deliver(hook, events)
    assert [(b["payload"]["rule"], b["payload"]["state"]) for b in hook.bodies] == [("a", "on"), ("a", "off")]
    assert hook.times[1] - hook.times[0] >= 0.9  # waited as Retry-After asked, not the 0.05 s backoff
    assert (notifier.delivered, notifier.given_up) == (2, 0)
    with WebhookReceiver() as hook:
        _deliver(hook, events, select="all")
    assert [b["payload"]["rule"] for b in hook.bodies] == ["a", "b", "a"]


def test_webhook_does_not_retry_a_refusal_and_gives_up_after_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="framelens.alerts"), \
            WebhookReceiver(fail_first=1, fail_status=400) as hook:
        notifier = _deliver(hook, [_alert("a", "on"), _alert("a", "off")], attempts=3)
    assert hook.attempts == 2 and notifier.given_up == 1  # the 400 was not retried; the next event went through
    assert "refused the on event of rule a with HTTP 400; not retrying" in caplog.text
    with caplog.at_level(logging.ERROR, logger="framelens.alerts"), WebhookReceiver(fail_first=99) as hook:
        notifier = _deliver(hook, [_alert("a", "on")], attempts=3)
    assert hook.attempts == 3 and notifier.given_up == 1
    assert "gave up on the on event of rule a after 3 attempts: HTTP 503" in caplog.text
