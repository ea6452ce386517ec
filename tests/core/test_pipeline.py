"""framelens.Pipeline: runs from Python, the frames() iterator, shutdown, validation; factory ids."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import free_port

from framelens import (
    ConfigError,
    Context,
    Frame,
    Options,
    Pipeline,
    Processor,
    RegisterBackend,
    RegisterOutput,
    RegisterProcessor,
    RegisterSource,
    SourceError,
    hookimpl,
)
from framelens.config import RunConfig
from framelens.plugin_manager import get_plugin_manager
from framelens.testing import CollectingOutput, FakeBackend, ListSource, backend_registered, plugin_registered


class Boom(ListSource):
    """Plays three frames, then fails as a broken file would."""

    def read(self) -> np.ndarray | None:
        if self._i >= 3:
            raise SourceError("list20: the file is corrupt after frame 3")
        return super().read()


class Tagger(Processor):
    def __init__(self, key: str) -> None:
        self.key = key
        self.closed = False

    def process(self, frame: Frame) -> Frame:
        frame.results[self.key] = frame.index * 10
        return frame

    def close(self) -> None:
        self.closed = True


class KitPlugin:
    """A collecting output, a tagging processor, sources and a backend that record their ``id``."""

    def __init__(self) -> None:
        self.output = CollectingOutput()
        self.taggers: list[Tagger] = []
        self.ids: dict[str, list[str]] = {"source": [], "backend": []}
        self.images = [np.full((24, 32, 3), i, np.uint8) for i in range(6)]

    @hookimpl
    def register_outputs(self, register: RegisterOutput) -> None:
        register("kit-collect", lambda target, options, context: self.output, help="test output")

    @hookimpl
    def register_processors(self, register: RegisterProcessor) -> None:
        def make(options: Options, context: Context, id: str) -> Tagger:
            self.taggers.append(Tagger(id))
            return self.taggers[-1]

        register("tag", make)

    @hookimpl
    def register_sources(self, register: RegisterSource) -> None:
        def make(locator: str, options: Options, context: Context, id: str) -> ListSource:
            self.ids["source"].append(id)
            return ListSource(self.images)

        register("kitlist", make)
        register("kitboom", lambda locator, options, context: Boom(self.images))

    @hookimpl
    def register_backends(self, register: RegisterBackend) -> None:
        def make(options: Options, context: Context, id: str) -> FakeBackend:
            self.ids["backend"].append(id)
            return FakeBackend()

        register("kitfake", make)


@pytest.fixture
def kit() -> Iterator[KitPlugin]:
    plugin = KitPlugin()
    with plugin_registered(plugin, "pipeline-test-kit"):
        yield plugin


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_returns_the_benchmark_report(kit: KitPlugin) -> None:
    pipeline = Pipeline("kitlist", ["tag", "fps"], ["kit-collect"])
    report = pipeline.run(max_frames=5)
    assert report["frames"] == 5 and report["seconds"] > 0 and report["dropped"] == 0
    assert list(report["processors"]) == ["tag", "fps"]
    assert all(p["calls"] == 5 for p in report["processors"].values())
    assert [f.index for f in kit.output.frames] == list(range(5))
    assert kit.output.closed and kit.taggers[0].closed
    # Each call is a fresh run, with its own components.
    assert pipeline.run(max_frames=2)["frames"] == 2 and len(kit.taggers) == 2


def test_frames_yields_processed_frames_with_their_results(kit: KitPlugin) -> None:
    frames = list(Pipeline("kitlist", ["tag:first", ("fps", {})]).frames())
    assert [f.index for f in frames] == list(range(6))
    assert [f.results["first"] for f in frames] == [0, 10, 20, 30, 40, 50]
    assert "fps" in frames[-1].results
    assert all(t.closed for t in kit.taggers), "an exhausted iterator shut the run down"


def test_closing_frames_early_shuts_everything_down(kit: KitPlugin) -> None:
    port = free_port()
    pipeline = Pipeline("testpattern", ["tag"], ["kit-collect", "mjpeg"],
                        options={"mjpeg": {"port": port}, "testpattern": {"fps": 200}})
    frames = pipeline.frames()
    first = next(frames)
    assert first.results["tag"] == first.index * 10  # a live source: the newest frame, maybe not 0
    assert listening(port)
    assert httpx.get(f"http://127.0.0.1:{port}/snapshot.jpg", timeout=10).status_code == 200
    frames.close()
    assert kit.output.closed and kit.taggers[0].closed
    assert not listening(port), "the mjpeg port is freed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert pipeline.report()["frames"] == 1


def test_breaking_out_of_a_for_loop_shuts_down(kit: KitPlugin) -> None:
    with contextlib.closing(Pipeline("testpattern", ["tag"], options={"testpattern": {"fps": 500}}).frames()) as it:
        for frame in it:
            if frame.index >= 2:  # a live source drops frames on a busy machine
                break
    assert kit.taggers[0].closed


def test_a_failing_source_raises_and_still_shuts_down(kit: KitPlugin) -> None:
    seen = []
    with pytest.raises(SourceError, match="corrupt after frame 3"):
        for frame in Pipeline("kitboom", ["tag"], ["kit-collect"]).frames():
            seen.append(frame.index)
    assert seen == [0, 1, 2]
    assert kit.output.closed and kit.taggers[0].closed


def test_bad_input_is_a_config_error_before_anything_starts(kit: KitPlugin) -> None:
    pipeline = Pipeline("kitlist", ["tag", "captoins"], ["kit-collect"])
    with pytest.raises(ConfigError, match=r"processors\[1\]: unknown processor 'captoins' \(did you mean captions"):
        pipeline.run()
    assert not kit.output.started and kit.taggers == []
    with pytest.raises(ConfigError, match=r"processors\[0\]: expected \(name, \{option: value\}\)"):
        Pipeline("testpattern", [("captions", 3)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"run\['max_frame'\]: unknown setting \(did you mean max-frames"):
        Pipeline("testpattern", run={"max_frame": 3})
    with pytest.raises(ConfigError, match=r"run\['realtime'\]: expected true or false"):
        Pipeline("testpattern", run={"realtime": "sometimes"})
    with pytest.raises(ConfigError, match="unknown option 'testpattern-fsp' \\(did you mean testpattern-fps"):
        Pipeline("testpattern", options={"testpattern": {"fsp": 3}}).run(max_frames=1)
    with pytest.raises(ConfigError, match="max_frames: must be a positive number, got 0"):
        Pipeline("testpattern").run(max_frames=0)
    with pytest.raises(ConfigError, match="--max-failures: must be a positive number, got -1"):
        Pipeline("testpattern", run={"max-failures": -1}).run()


def test_options_backend_and_run_settings_reach_the_components(kit: KitPlugin, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    backend = FakeBackend(["a red door", "a blue door"], models=["door-1"])
    frames = []
    with backend_registered("doors", backend):
        pipeline = Pipeline("testpattern", ["describe", "captions"], backend="doors",
                            options={"testpattern-fps": 100, "describe": {"interval": 0}},
                            run={"max_frames": 3000, "events": str(events)})
        # Until the first complete answer is on a frame; bounded by max_frames (30 s at 100 fps).
        with contextlib.closing(pipeline.frames()) as it:
            for frame in it:
                frames.append(frame)
                described = frame.results.get("describe")
                if described is not None and not described.partial:
                    break
    assert described is not None and described.text in ("a red door", "a blue door"), described
    assert len(frames) < 3000
    assert backend.requests and backend.requests[0].images(), "the describer sent the frame"
    assert backend.requests[0].params.model in (None, "door-1")
    last = json.loads(events.read_text().splitlines()[-1])
    assert last["payload"] == {"state": "stopped", "frames": len(frames)}


def test_from_file_and_from_config(kit: KitPlugin, tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("source: kitlist\nprocessors: [tag:t]\noutputs: [kit-collect]\nrun: {max-frames: 4}\n")
    report = Pipeline.from_file(path).run()
    assert report["frames"] == 4 and report["processors"]["t"]["calls"] == 4
    assert kit.ids["source"] == ["kitlist"], "a source factory that declares id gets it"
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: kitlist\nprocessors: [nope]\n")
    with pytest.raises(ConfigError, match=f"{bad}: processors\\[0\\]: unknown processor 'nope'"):
        Pipeline.from_file(bad).run()
    assert Pipeline.from_config(RunConfig(source="kitlist")).run()["frames"] == 6


def test_a_backend_factory_gets_the_name_it_is_shared_under(kit: KitPlugin) -> None:
    context = Context(get_plugin_manager().registry)
    first = context.backend("cam2", type="kitfake")
    assert context.backend("cam2") is first
    context.backend("kitfake")
    assert kit.ids["backend"] == ["cam2", "kitfake"]



def test_a_service_run_takes_options_for_sources_it_opens_on_request() -> None:
    """`serve` opens rtsp://, v4l2://... when a request names them: their -c options are accepted, checked at
    start, and reach the sources the service opens; a run without a service still refuses them."""
    options = {"http-port": 0, "testpattern-width": 123, "testpattern-height": 45}
    runtime = Pipeline(None, ["http"], ["none"], options=options, need_source=False).build()
    assert runtime.context is not None  # type: ignore[union-attr]
    source = runtime.context.make_source("testpattern")  # type: ignore[union-attr]
    source.open()
    try:
        frame = source.read()
        assert frame is not None and frame.shape[:2] == (45, 123)
    finally:
        source.close()
    bad = r"options\['rtsp-transport'\]: bad value for 'rtsp-transport': 'pigeon'.*'tcp' or 'udp'"
    with pytest.raises(ConfigError, match=bad):
        Pipeline(None, ["http"], ["none"], options={"http-port": 0, "rtsp-transport": "pigeon"},
                 need_source=False).build()
    with pytest.raises(ConfigError, match="unknown option 'rtsp-transport'"):
        Pipeline("testpattern", [], ["none"], options={"rtsp-transport": "udp"}).build()
