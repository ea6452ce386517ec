"""The runtime loop: order, repeats, fault isolation, sticky results, background work, stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ROOT

from framelens import (
    BackgroundWorker,
    Caption,
    ConfigError,
    Context,
    Field,
    Frame,
    Options,
    Pipeline,
    Processor,
    RegisterFn,
    hookimpl,
)
from framelens.testing import ListSource, plugin_registered, run_pipeline


class TagOptions(Options):
    tag: str = Field("x", description="label recorded with each call")


class Recorder(Processor):
    def __init__(self, log: list[tuple[str, int]], tag: str) -> None:
        self.log, self.tag = log, tag

    def process(self, frame: Frame) -> Frame:
        self.log.append((self.tag, frame.index))
        return frame


class FailOptions(Options):
    fail_on: str = Field("all", description="'all' or comma-separated frame indexes")


class Failing(Processor):
    def __init__(self, fail_on: str) -> None:
        self.fail_on = None if fail_on == "all" else {int(i) for i in fail_on.split(",")}
        self.closed = False

    def process(self, frame: Frame) -> Frame:
        if self.fail_on is None or frame.index in self.fail_on:
            raise RuntimeError(f"broken on {frame.index}")
        return frame.replace(image=frame.image + np.uint8(1))

    def close(self) -> None:
        self.closed = True


class Publisher(Processor):
    """Publishes a sticky caption at frame 3; records what each frame sees."""

    def __init__(self, context: Context, seen: list[Any]) -> None:
        self.context, self.seen = context, seen

    def process(self, frame: Frame) -> Frame:
        self.seen.append(frame.results.get("note"))
        if frame.index == 3:
            self.context.publish_result("note", Caption("hello"))
        return frame


class SlowBackground(Processor):
    """Submits every frame to a worker whose call takes ``delay`` seconds."""

    def __init__(self, context: Context, delay: float, record: dict[str, Any]) -> None:
        self.record = record
        self.delay = delay

        async def call(frame: Frame) -> int:
            self.record["calls"].append((time.time(), frame.index))
            await asyncio.sleep(self.delay)
            return frame.index

        self.worker = BackgroundWorker("slow", call, runner=context.runner, timeout=5,
                                       on_result=lambda f, r, s: self.record["done"].append((time.time(), r)))

    def start(self) -> None:
        self.worker.start()

    def process(self, frame: Frame) -> Frame:
        self.worker.submit(frame)
        self.record["frames"].append(time.time())
        return frame

    def close(self) -> None:
        self.worker.close()


class RuntimePlugin:
    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.seen: list[Any] = []
        self.failing: list[Failing] = []
        self.slow: dict[str, Any] = {"calls": [], "done": [], "frames": []}
        self.images = [np.full((48, 64, 3), i, np.uint8) for i in range(20)]

    @hookimpl
    def register_processors(self, register: RegisterFn) -> None:
        register("record", lambda o, c: Recorder(self.log, o.tag), options=TagOptions)

        def make_failing(o: FailOptions, c: Context) -> Failing:
            self.failing.append(Failing(o.fail_on))
            return self.failing[-1]

        register("failing", make_failing, options=FailOptions)
        register("publisher", lambda o, c: Publisher(c, self.seen))
        register("slowbg", lambda o, c: SlowBackground(c, 1.0, self.slow))

    @hookimpl
    def register_sources(self, register: RegisterFn) -> None:
        register("list20", lambda loc, o, c: ListSource(self.images))


@pytest.fixture
def plugin() -> Iterator[RuntimePlugin]:
    p = RuntimePlugin()
    with plugin_registered(p, "runtime-test-plugin"):
        yield p


def test_processors_run_in_configured_order_with_repeats(plugin: RuntimePlugin) -> None:
    pipeline = Pipeline("list20", ["record:b", "record", "record:a"],
                        options={"b": {"tag": "first"}, "record": {"tag": "second"}, "a-tag": "third"})
    frames = list(pipeline.frames())
    report = pipeline.report()
    assert report["frames"] == 20
    assert [t for t, i in plugin.log[:3]] == ["first", "second", "third"]
    assert plugin.log[3:6] == [("first", 1), ("second", 1), ("third", 1)]
    assert list(report["processors"]) == ["b", "record", "a"]
    assert all(p["calls"] == 20 for p in report["processors"].values())
    assert len(frames) == 20 and [f.index for f in frames] == list(range(20))


def test_same_id_twice_is_a_config_error(plugin: RuntimePlugin) -> None:
    with pytest.raises(ConfigError, match="configured twice with the same id"):
        Pipeline("list20", ["record", "record"]).run()


def test_failing_processor_is_isolated_then_disabled(plugin: RuntimePlugin, caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline("list20", ["failing", "record"], run={"max-failures": 4})
    report = pipeline.run()
    runtime = pipeline.runtime
    assert runtime is not None and report["frames"] == 20
    assert [i for _, i in plugin.log] == list(range(20)), "later stages still see every frame"
    assert report["processors"]["failing"]["calls"] == 4
    assert runtime.stages[0].enabled is False
    assert plugin.failing[0].closed, "a disabled processor is still closed at shutdown"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "processor failing failed on frame 0: RuntimeError: broken on 0" in errors
    assert "processor failing disabled after 4 consecutive failures" in errors


def test_intermittent_failures_reset_the_count(plugin: RuntimePlugin) -> None:
    pipeline = Pipeline("list20", [("failing", {"fail-on": "2,3,5,7"})], run={"max_failures": 3})
    frames = list(pipeline.frames())
    assert pipeline.runtime is not None and pipeline.runtime.stages[0].enabled
    changed = [int(f.image[0, 0, 0]) - f.index for f in frames]
    assert changed == [0 if i in (2, 3, 5, 7) else 1 for i in range(20)], "failed frames pass on unchanged"


def test_sticky_results_stay_visible_until_replaced(plugin: RuntimePlugin) -> None:
    Pipeline("list20", ["publisher"]).run(max_frames=8)
    assert plugin.seen[:4] == [None] * 4
    assert plugin.seen[4:] == [Caption("hello")] * 4


def test_events_file_gets_one_json_object_per_line(plugin: RuntimePlugin, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    run_pipeline(["-s", "list20", "-p", "failing", "--max-failures", "2",  "--events", str(path)])
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["type"] for e in events] == ["run", "source", "processor", "source", "run"]
    assert all(set(e) == {"type", "time", "source", "frame_index", "payload"} for e in events)
    disabled = events[2]
    assert disabled["payload"]["state"] == "disabled" and disabled["payload"]["id"] == "failing"
    assert disabled["frame_index"] == 1
    assert events[-1]["payload"] == {"state": "stopped", "frames": 20}


def test_slow_background_call_does_not_stall_the_loop(plugin: RuntimePlugin) -> None:
    report, out, _ = run_pipeline(["-s", "testpattern", "--fps", "50", "-p", "slowbg", 
                                   "--max-frames", "100"])
    assert report["frames"] == 100
    calls, done, frames = plugin.slow["calls"], plugin.slow["done"], plugin.slow["frames"]
    assert len(calls) >= 1
    # While the first 1-second call was in flight, the loop kept handing out frames.
    start, end = calls[0][0], done[0][0]
    during = [t for t in frames if start < t < end]
    assert len(during) >= 20, f"only {len(during)} frames passed during a 1 s background call"
    # The worker always took the newest frame: each call's frame is the latest submitted at that time.
    for t, index in calls[1:]:
        submitted_before = sum(1 for ft in frames if ft <= t)
        assert index >= submitted_before - 2


def test_live_source_drops_are_counted(plugin: RuntimePlugin) -> None:
    class Sleepy(Processor):
        def process(self, frame: Frame) -> Frame:
            time.sleep(0.03)
            return frame

    class P:
        @hookimpl
        def register_processors(self, register: RegisterFn) -> None:
            register("sleepy", lambda o, c: Sleepy())

    with plugin_registered(P(), "sleepy-plugin"):
        report, out, _ = run_pipeline(["-s", "testpattern", "--fps", "200", "-p", "sleepy", 
                                       "--max-frames", "20"])
    assert report["frames"] == 20
    assert report["dropped"] > 0
    indexes = [f.index for f in out.frames]
    assert indexes == sorted(indexes)
    skipped = indexes[-1] + 1 - len(indexes)
    # Frames that arrive while the last frame is processed are dropped too.
    assert skipped <= report["dropped"] <= skipped + 12


def test_stop_from_another_thread_ends_cleanly(plugin: RuntimePlugin) -> None:
    pipeline = Pipeline("testpattern", ["record"], ["none"], run={"fps": 100})
    runtime = pipeline.build()
    threading.Timer(0.5, runtime.stop).start()
    report = runtime.run()
    assert 10 < report["frames"] < 500
    assert runtime._capture is not None and not runtime._capture.running


def test_sigterm_flushes_outputs_and_exits_zero(tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "framelens", "run", "-s", "testpattern", "--fps", "50", "-p", "fps", 
         "--events", str(events), "--benchmark"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 30
    while time.time() < deadline and (not events.exists() or "started" not in events.read_text()):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["frames"] > 0
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert lines[-1]["type"] == "run" and lines[-1]["payload"]["state"] == "stopped"
    assert "Traceback" not in stderr


def test_files_loop_and_keep_counting(tmp_path: Path) -> None:
    from helpers import make_video

    clip = make_video(tmp_path / "c.avi", frames=30, fourcc="MJPG")
    report, out, _ = run_pipeline(["-s", str(clip), "--loop", "--max-frames", "70"])
    assert report["frames"] == 70
    assert [f.index for f in out.frames] == list(range(70))


def test_files_play_at_native_rate_with_realtime(tmp_path: Path) -> None:
    from helpers import make_video

    clip = make_video(tmp_path / "c.avi", frames=20, fps=20.0, fourcc="MJPG")
    _, fast, _ = run_pipeline(["-s", str(clip)])
    _, paced, _ = run_pipeline(["-s", str(clip), "--realtime"])
    assert len(fast.frames) == len(paced.frames) == 20
    span = paced.frames[-1].timestamp - paced.frames[0].timestamp
    assert span >= 0.9 * 19 / 20, f"20 frames at 20 fps took only {span:.2f} s"
