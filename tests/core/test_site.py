"""Many cameras in one process: framelens.Site through Pipeline, deployment files and the CLI."""

from __future__ import annotations

import collections
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeOllama, unused_url
from helpers import free_port, run_cli

from framelens import ConfigError, Frame, Options, Pipeline, Processor, RegisterProcessor, Site, SourceError, hookimpl
from framelens.testing import FakeBackend, FakeBackendPlugin, plugin_registered

THREE = """\
backends: {vlm: {backend: fakecam}}
defaults:
  processors: [{describe: {backend: vlm}}, captions]
  outputs: [none]
cameras:
  door: testpattern
  garage: {source: testpattern, options: {describe-prompt: "Is the garage open?"}}
  yard: {source: testpattern, processors: [{describe: {backend: vlm, prompt: "Any animals?"}}, fps]}
options: {testpattern-fps: 30}
"""


@pytest.fixture
def fakecam() -> Iterator[FakeBackendPlugin]:
    """A backend type ``fakecam`` whose every instance is a new FakeBackend (so a test can count them)."""
    plugin = FakeBackendPlugin("fakecam", make=lambda: FakeBackend(lambda r: f"seen: {r.text}", delay=0.02))
    made: list[FakeBackend] = []
    original = plugin._create

    def counting(options: Options, context: object) -> FakeBackend:
        backend = original(options, context)
        assert isinstance(backend, FakeBackend)
        made.append(backend)
        return backend

    plugin._create = counting  # type: ignore[method-assign]
    plugin.made = made  # type: ignore[attr-defined]
    with plugin_registered(plugin, "site-test-fakecam"):
        yield plugin


def run_for(site: Site, seconds: float) -> dict[str, Any]:
    """Run ``site`` for ``seconds`` (stopped from a timer thread, as SIGINT would) and return its report."""
    timer = threading.Timer(seconds, site.stop)
    timer.start()
    try:
        return site.run()
    finally:
        timer.cancel()


def _collect(pipeline: Pipeline, until: float, done: object) -> dict[str, list[Frame]]:
    frames: dict[str, list[Frame]] = collections.defaultdict(list)
    deadline = time.monotonic() + until
    with contextlib.closing(pipeline.frames()) as it:
        for frame in it:
            frames[frame.source_id].append(frame)
            if done(frames) or time.monotonic() > deadline:  # type: ignore[operator]
                break
    return frames


def _described(frames: list[Frame], key: str) -> list[str]:
    return [f.results[key].text for f in frames if key in f.results and not f.results[key].partial
            and f.results[key].text]


def test_three_cameras_from_a_file_with_shared_defaults(tmp_path: Path, fakecam: FakeBackendPlugin) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(THREE)
    events = tmp_path / "events.jsonl"
    pipeline = Pipeline.from_file(path)
    pipeline.config.run["events"] = str(events)

    def done(frames: dict[str, list[Frame]]) -> bool:
        return all(_described(frames.get(c, []), f"{c}-describe") for c in ("door", "garage", "yard"))

    frames = _collect(pipeline, 20, done)
    assert set(frames) == {"door", "garage", "yard"}
    for camera, got in frames.items():
        assert all(f.source_id == camera for f in got)
        # Each camera's results are its own: no other camera's describer on its frames.
        others = {c for c in ("door", "garage", "yard") if c != camera}
        assert not {k for f in got for k in f.results if k.split("-")[0] in others}
    assert "Describe what is in this picture" in _described(frames["door"], "door-describe")[-1]
    assert "Is the garage open?" in _described(frames["garage"], "garage-describe")[-1]
    assert "Any animals?" in _described(frames["yard"], "yard-describe")[-1]
    assert "fps" in frames["yard"][-1].results and "fps" not in frames["door"][-1].results
    # One backend instance `vlm` (type fakecam) serves all three cameras.
    made = fakecam.made  # type: ignore[attr-defined]
    assert len(made) == 1 and made[0].closed
    asked = {"Is the garage open?" in r.text for r in made[0].requests}
    assert asked == {True, False}
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    sources = {e["source"] for e in lines if e["type"] == "description"}
    assert sources <= {"door", "garage", "yard"} and "door" in sources
    assert {e["source"] for e in lines if e["type"] == "source"} == {"door", "garage", "yard"}
    assert [e["payload"]["state"] for e in lines if e["type"] == "run"] == ["started", "stopped"]
    report = pipeline.report()
    assert set(report["cameras"]) == {"door", "garage", "yard"}
    assert report["frames"] == sum(c["frames"] for c in report["cameras"].values()) > 0
    assert list(report["cameras"]["yard"]["processors"]) == ["yard-describe", "yard-fps"]


def test_repeated_s_on_the_command_line_reports_per_camera() -> None:
    proc = run_cli(["run", "-s", "a=testpattern", "-s", "b=testpattern", "-p", "fps", "-o", "none",
                    "-c", "b-fps-size=0.5", "--max-frames", "20", "--benchmark"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report["cameras"]) == {"a", "b"}
    for camera in ("a", "b"):
        assert report["cameras"][camera]["frames"] == 20
        assert list(report["cameras"][camera]["processors"]) == [f"{camera}-fps"]
        assert set(report["cameras"][camera]["latency"]) == {"mean_ms", "p95_ms"}  # capture to outputs
    assert report["frames"] == 40


class Slow(Processor):
    """Takes 30 ms a frame: a camera whose pipeline is expensive."""

    def process(self, frame: Frame) -> Frame:
        time.sleep(0.03)
        return frame


class SlowPlugin:
    @hookimpl
    def register_processors(self, register: RegisterProcessor) -> None:
        register("slowstage", lambda options, context: Slow())


def test_a_camera_that_fails_or_is_slow_never_slows_the_others() -> None:
    down = unused_url("/stream").replace("http://", "rtsp://")
    cameras = {
        "good": "testpattern",
        "lost": down,                                           # cannot be opened: retried in the background
        "slow": {"source": "testpattern", "processors": ["slowstage"]},
    }
    with plugin_registered(SlowPlugin(), "site-test-slow"):
        pipeline = Pipeline(cameras=cameras, processors=["fps"], outputs=["none"],
                            options={"testpattern-fps": 30})
        site = pipeline.build()
        assert isinstance(site, Site)
        report = run_for(site, 2.5)
    good, slow, lost = (report["cameras"][c] for c in ("good", "slow", "lost"))
    assert good["fps"] >= 24, good      # the test pattern's 30 fps, less start-up
    assert 10 <= slow["fps"] <= 34, slow  # at most 1/30 ms
    assert lost["frames"] == 0 and "error" in lost


def test_every_camera_failing_is_an_error() -> None:
    down = unused_url("/x").replace("http://", "rtsp://")
    proc = run_cli(["run", "-s", f"a={down}", "-s", f"b={down}", "-o", "none", "--max-frames", "5"], timeout=60)
    assert proc.returncode == 1
    assert "no camera could be started" in proc.stderr and "Traceback" not in proc.stderr


def test_fairness_one_slow_backend_shared_by_four_cameras() -> None:
    with FakeOllama(delay=0.08) as ollama:
        pipeline = Pipeline(
            cameras={c: "testpattern" for c in ("c1", "c2", "c3", "c4")},
            processors=[("ollama", {"stream": False})], outputs=["none"],
            options={"ollama": {"url": ollama.url, "model": "llava", "max-in-flight": 1}, "testpattern-fps": 15},
        )
        site = pipeline.build()
        assert isinstance(site, Site)
        report = run_for(site, 4.0)
        chats = len(ollama.requests_to("/api/chat"))
    counts = [report["cameras"][c]["processors"][f"{c}-ollama"]["described"] for c in ("c1", "c2", "c3", "c4")]
    # One request at a time, 80 ms each: about 12 a second shared by four cameras.
    assert sum(counts) >= 16 and chats >= sum(counts)
    assert min(counts) >= 0.7 * max(counts), counts


def test_aliases_share_one_backend_unless_a_camera_sets_its_own(fakecam: FakeBackendPlugin) -> None:
    pipeline = Pipeline(cameras={"a": "testpattern", "b": "testpattern", "c": "testpattern"},
                        processors=["describe"], outputs=["none"], backend="fakecam")
    site = pipeline.build(max_frames=3)
    assert isinstance(site, Site)
    site.run()
    assert len(fakecam.made) == 1  # type: ignore[attr-defined]


def test_ollama_alias_shares_unless_the_camera_sets_backend_options() -> None:
    with FakeOllama() as one, FakeOllama() as two:
        pipeline = Pipeline(cameras={"a": "testpattern", "b": "testpattern", "c": "testpattern"},
                            processors=[("ollama", {"stream": False})], outputs=["none"],
                            options={"ollama-url": one.url, "c-ollama-url": two.url})
        site = pipeline.build()
        assert isinstance(site, Site)
        run_for(site, 2.0)
        assert site.runtime is not None and site.runtime.context is not None
        # a and b share the site's `ollama`; c set a URL of its own, so it has its own instance.
        assert sorted(site.runtime.context.backends()) == ["c-ollama", "ollama"]
        assert one.requests_to("/api/chat") and two.requests_to("/api/chat")


def test_serve_lists_every_camera_and_answers_about_each(tmp_path: Path) -> None:
    port = free_port()
    with FakeOllama() as ollama:
        import subprocess
        import sys

        proc = subprocess.Popen(
            [sys.executable, "-m", "framelens", "serve", "--port", str(port), "--backend", "ollama",
             "-c", f"ollama-url={ollama.url}", "-s", "door=testpattern", "-s", "garage=testpattern",
             "-c", "testpattern-fps=10"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            streams: list[str] = []
            while time.monotonic() < deadline and len(streams) < 2:
                with contextlib.suppress(httpx.HTTPError):
                    streams = [s["id"] for s in httpx.get(base + "/v1/streams", timeout=2).json()["data"]]
                time.sleep(0.2)
            assert sorted(streams) == ["door", "garage"]
            for camera in ("door", "garage"):
                body = {"model": "llava", "messages": [{"role": "user", "content": [
                    {"type": "text", "text": f"What is at the {camera}?"},
                    {"type": "image_url", "image_url": {"url": f"stream://{camera}"}}]}]}
                reply = httpx.post(base + "/v1/chat/completions", json=body, timeout=30)
                assert reply.status_code == 200, reply.text
                assert reply.json()["choices"][0]["message"]["content"]
            metrics = httpx.get(base + "/metrics", timeout=10).text
            for camera in ("door", "garage"):
                assert f'framelens_frames_total{{source="{camera}"}}' in metrics
            sent = [r.json() for r in ollama.requests_to("/api/chat")]
            assert [m["messages"][-1]["content"] for m in sent[-2:]] == ["What is at the door?",
                                                                        "What is at the garage?"]
            assert all(m["messages"][-1]["images"] for m in sent[-2:])
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err


@pytest.mark.parametrize(("yaml", "message"), [
    ("cameras:\n  a: testpattern\n  b: testpattern\n  a: testpattern\n",
     r"line 4: duplicate key 'a' \(first at line 2\)"),
    ("cameras: {a: {source: testpattern, procesors: [fps]}}", r"cameras\.a: unknown key 'procesors' "
                                                            r"\(did you mean processors"),
    ("cameras: {a: testpattern, b: testpattern}\noutputs: [out.mp4]",
     r"outputs\[0\]: 2 cameras cannot share one output; put \{camera\} in the target"),
    ("cameras: {a: {processors: [fps]}}", r"cameras\.a\.source: every camera needs a source"),
    ("cameras: {'a b': testpattern}", r"camera id 'a b'"),
    ("source: testpattern\ncameras: {a: testpattern}", "source and cameras both given"),
    ("cameras: {fps: testpattern}\nprocessors: [fps]", "camera id 'fps' is also the name of a component"),
    ("cameras: {a: {source: testpattern, processors: [http]}}", "http is a service, which serves the whole site"),
    ("cameras: {a: testpattern}\nprocessors: [fps]\noptions: {a-fps-sise: 2}",
     r"unknown option 'a-fps-sise' \(did you mean a-fps-size"),
    ("backends: {vlm: {backend: nosuch}}\ncameras: {a: testpattern}", r"backends\.vlm\.backend: unknown backend"),
    ("defaults: {processors: [fps]}\nprocessors: [fps]\ncameras: {a: testpattern}",
     "processors and defaults.processors both given"),
])
def test_bad_site_files_are_one_line_config_errors(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError, match=message) as info:
        Pipeline.from_file(path).build()
    assert "\n" not in str(info.value)


def test_bad_command_lines_exit_2_with_one_line() -> None:
    cases = [
        (["-s", "a=testpattern", "-s", "a=testpattern"], "camera 'a' given twice"),
        (["-s", "a=testpattern", "-s", "b=testpattern", "-o", "out.mp4"], "cannot share one output"),
        (["-s", "testpattern", "-s", "b=testpattern"], "name each one"),
        (["-s", "a=testpattern", "-s", "b=testpattern", "-p", "http", "-c", "http-prot=1"],
         "unknown option 'http-prot'"),
        (["-s", "a=testpattern", "-p", "fps", "-c", "nosuch-fps-size=1"], "unknown option 'nosuch-fps-size'"),
    ]
    for argv, message in cases:
        proc = run_cli(["run", *argv, "--max-frames", "2"], timeout=30)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_outputs_with_camera_in_the_target_write_one_file_per_camera(tmp_path: Path) -> None:
    target = str(tmp_path / "out-{camera}.mp4")
    report = Pipeline(cameras={"a": "testpattern", "b": "testpattern"}, outputs=[target],
                      options={"testpattern": {"fps": 30}}).run(max_frames=15)
    assert report["cameras"]["a"]["frames"] == report["cameras"]["b"]["frames"] == 15
    for camera in ("a", "b"):
        assert (tmp_path / f"out-{camera}.mp4").stat().st_size > 0


def test_services_are_site_wide_and_cameras_get_prefixed_ids(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("defaults: {processors: [fps, {blur: {ksize: 5}}, {alerts: {store: '/tmp/x-{camera}.json'}}]}\n"
                    "services: [http]\n"
                    "cameras: {a: testpattern, b: {source: testpattern, options: {blur-ksize: 9}}}\n"
                    f"options: {{http-port: {free_port()}, b-fps-size: 0.5}}\n")
    site = Pipeline.from_file(path).build()
    assert isinstance(site, Site) and site.runtime is not None
    assert [sid for sid, _ in site.runtime.services] == ["http"]
    assert [s.id for s in site.cameras["a"].stages] == ["a-fps", "a-blur", "a-alerts"]
    assert [s.id for s in site.cameras["b"].stages] == ["b-fps", "b-blur", "b-alerts"]
    options = {c: {s.id: s.processor.options for s in site.cameras[c].stages} for c in ("a", "b")}  # type: ignore
    # {camera} in a string option: each camera its own alert store.
    assert options["a"]["a-alerts"].store == "/tmp/x-a.json" and options["b"]["b-alerts"].store == "/tmp/x-b.json"
    assert options["a"]["a-blur"].ksize == 5 and options["b"]["b-blur"].ksize == 9
    assert options["a"]["a-fps"].size == 1.0 and options["b"]["b-fps"].size == 0.5
    assert site.runtime.context is not None
    site.runtime.context.close()


def test_a_child_context_shares_the_site_and_closes_only_its_own(fakecam: FakeBackendPlugin) -> None:
    from framelens import Context
    from framelens.plugin_manager import get_plugin_manager

    site = Context(get_plugin_manager().registry, namespaces={"describe": {"interval": "5"}},
                   backend_types={"vlm": "fakecam"})
    door = site.child("door", namespaces={"door-describe": {"prompt": "p"}})
    assert door.root is site and door.camera == "door" and door.unprefixed("door-describe") == "describe"
    assert door.events is site.events and door.runner is site.runner and door.streams is site.streams
    assert door.metrics is site.metrics and door.state("k", list) is site.state("k", list)
    assert door.namespace_options("describe") == {"interval": "5"}  # the site's, seen through the child
    assert door.namespace_options("door-describe") == {"prompt": "p"} and site.namespace_options("door-describe") == {}
    assert door.backend("vlm") is site.backend("vlm")  # one instance of the declared type
    door.publish_result("k", 1)
    assert dict(door.sticky_results()) == {"k": 1} and dict(site.sticky_results()) == {}
    closed: list[str] = []
    door.on_close(lambda: closed.append("door"))
    site.on_close(lambda: closed.append("site"))
    door.close()
    assert closed == ["door"] and not site.stopping.is_set()
    made = fakecam.made  # type: ignore[attr-defined]
    assert len(made) == 1 and not made[0].closed, "the shared backend outlives the camera"
    site.close()
    assert closed == ["door", "site"] and made[0].closed


def test_an_alias_stage_entry_configures_its_backend_in_each_camera(tmp_path: Path) -> None:
    models = {"moondream:latest": ["completion", "vision"], "llava:latest": ["completion", "vision"]}
    with FakeOllama(models=models) as server:
        path = tmp_path / "site.yaml"
        path.write_text(f"""\
defaults:
  processors:
    - ollama: {{url: "{server.url}", stream: false}}
cameras:
  a: testpattern
  b:
    source: testpattern
    processors:
      - ollama: {{url: "{server.url}", model: moondream, stream: false}}
""")
        site = Pipeline.from_file(path).build()
        assert isinstance(site, Site)
        run_for(site, 2.0)
        asked = {r.json()["model"] for r in server.requests_to("/api/chat")}
    # The entry's url reaches the backend (nothing listens on the default localhost:11434), and
    # camera b's own model gives it its own instance.
    assert asked == {"llava", "moondream"}


# -- cameras that end, or fail for good, end the site ------------------------------------------


def _run_in_thread(site: Site, timeout: float) -> dict[str, Any]:
    """``site.run()`` on a thread, waited for at most ``timeout`` s (a hang fails the test, not the suite)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["report"] = site.run()
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        site.stop()
        thread.join(10)
        raise AssertionError(f"the site was still running after {timeout} s")
    return result


def test_cameras_that_end_by_max_frames_or_a_file_end_the_site(video_file: Path) -> None:
    # The test pattern stops at --max-frames, the 30-frame file at its end (no --loop).
    site = Pipeline(cameras={"pattern": "testpattern", "clip": str(video_file)}, outputs=["none"],
                    options={"testpattern-fps": 30}).build(max_frames=45)
    assert isinstance(site, Site)
    result = _run_in_thread(site, 30)
    assert "error" not in result, result
    cameras = result["report"]["cameras"]
    assert cameras["pattern"]["frames"] == 45 and cameras["clip"]["frames"] == 30
    assert not site.dead and "error" not in cameras["clip"]


def test_a_camera_whose_file_is_missing_ends_and_the_run_exits_1_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.mp4"
    proc = run_cli(["run", "-s", "a=testpattern", "-s", f"b={missing}", "-o", "none", "--max-frames", "10",
                    "--benchmark"], timeout=60)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("framelens: error: camera b failed: ") and "no such file" in last, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])  # the report is still printed
    assert report["cameras"]["a"]["frames"] == 10 and report["cameras"]["b"]["frames"] == 0


def test_a_dead_rtsp_camera_with_max_reconnects_ends_and_the_run_exits_1_naming_it() -> None:
    down = unused_url("/cam").replace("http://", "rtsp://")
    t0 = time.monotonic()
    proc = run_cli(["run", "-s", "a=testpattern", "-s", f"b={down}", "-o", "none", "--max-frames", "10",
                    "--max-reconnects", "1", "--events", "-"], timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - t0 < 30
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("framelens: error: camera b failed: gave up after 1 failed reconnect attempt"), last
    assert "Traceback" not in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ended = [e["payload"] for e in events if e["type"] == "source" and e["source"] == "b"
             and e["payload"]["state"] == "ended"]
    assert len(ended) == 1 and "--max-reconnects" in ended[0]["reason"]


def test_the_same_in_process_raises_a_source_error_after_every_camera_ended(tmp_path: Path) -> None:
    site = Pipeline(cameras={"a": "testpattern", "b": str(tmp_path / "nothere.mp4")}, outputs=["none"],
                    options={"testpattern-fps": 30}).build(max_frames=10)
    assert isinstance(site, Site)
    result = _run_in_thread(site, 30)
    assert isinstance(result.get("error"), SourceError)
    assert str(result["error"]).startswith("camera b failed: ")
    assert set(site.dead) == {"b"} and site.cameras["a"].frames == 10
    # Pipeline.frames() ends the same way, after the frames of the camera that worked.
    pipeline = Pipeline(cameras={"a": "testpattern", "b": str(tmp_path / "nothere.mp4")}, outputs=["none"])
    frames = []
    with pytest.raises(SourceError, match="camera b failed"):
        for frame in pipeline.frames(max_frames=5):
            frames.append(frame)
    assert len(frames) == 5 and {f.source_id for f in frames} == {"a"}


def test_a_reconnecting_camera_is_not_dead_and_keeps_the_site_running() -> None:
    down = unused_url("/cam").replace("http://", "rtsp://")
    site = Pipeline(cameras={"a": "testpattern", "b": down}, outputs=["none"],
                    options={"testpattern-fps": 30}).build(max_frames=10)
    assert isinstance(site, Site)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=site.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while site.cameras["a"].frames < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.cameras["a"].frames == 10
    thread.join(2.0)
    assert thread.is_alive(), "the site ended while camera b was still reconnecting"
    site.stop()  # as Ctrl-C would: an end, not a failure
    thread.join(20)
    assert not thread.is_alive() and not site.dead
    assert "error" in result["report"]["cameras"]["b"]  # still reported as not working


def test_live_capture_gives_up_only_after_max_reconnects_failed_opens_in_a_row() -> None:
    import numpy as np

    from framelens import EventBus, Source, SourceInfo
    from framelens.capture import LiveCapture

    class Flaky(Source):
        """Live: opens fail as ``plan`` says (True: opens), reads end the stream after 3 frames."""

        live = True

        def __init__(self, plan: list[bool]) -> None:
            super().__init__("flaky://cam")
            self.plan, self.reads = list(plan), 0

        def open(self) -> SourceInfo:
            if self.plan and not self.plan.pop(0):
                raise SourceError("flaky://cam: refused")
            self.reads = 0
            return SourceInfo(8, 8, 30.0)

        def read(self) -> np.ndarray | None:
            self.reads += 1
            return np.zeros((8, 8, 3), np.uint8) if self.reads <= 3 else None

    # Two failed reopens between successes never reach 3 in a row: it keeps coming back.
    ok = LiveCapture(Flaky([True, False, False, True, False, False, True]), "a", EventBus(), backoff=0.01,
                     max_reconnects=3)
    ok.start()
    deadline = time.monotonic() + 10
    while ok.captured < 9 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ok.captured >= 9 and ok.failure is None
    ok.stop()
    # Three in a row: it ends, saying why.
    dead = LiveCapture(Flaky([True, False, False, False, True]), "b", EventBus(), backoff=0.01, max_reconnects=3)
    dead.start()
    deadline = time.monotonic() + 10
    while dead.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not dead.running and dead.state == "ended"
    assert dead.failure is not None and dead.failure.startswith("gave up after 3 failed reconnect attempts")
    dead.stop()
