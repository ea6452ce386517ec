"""The core's rate options: -c NAME-every=N and -c NAME-max-fps=F for every processor, results sticky."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import make_video, run_cli

from framelens import ConfigError, Context, Frame, Options, Pipeline, Processor, RegisterProcessor, hookimpl
from framelens.testing import plugin_registered


class Counting(Processor):
    """Puts the index of the frame it ran on into ``results[id]``."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.ran: list[int] = []

    def process(self, frame: Frame) -> Frame:
        self.ran.append(frame.index)
        frame.results[self.id] = frame.index
        return frame


class CountingPlugin:
    def __init__(self) -> None:
        self.made: list[Counting] = []

    @hookimpl
    def register_processors(self, register: RegisterProcessor) -> None:
        def make(options: Options, context: Context, id: str) -> Counting:
            self.made.append(Counting(id))
            return self.made[-1]

        register("counting", make)


@pytest.fixture
def counting() -> CountingPlugin:
    plugin = CountingPlugin()
    with plugin_registered(plugin, "rate-test-counting"):
        yield plugin  # type: ignore[misc]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("rate") / "clip.mp4", frames=30)


def test_every_n_runs_on_every_nth_frame_and_its_results_stay(counting: CountingPlugin, clip: Path) -> None:
    frames = list(Pipeline(str(clip), ["counting", "counting:other"], options={"counting-every": 3}).frames())
    first, other = counting.made
    assert first.ran == list(range(0, 30, 3))
    assert other.ran == list(range(30)), "the option belongs to its namespace only"
    # On the frames in between, the result of the last run is still on the frame.
    assert [f.results["counting"] for f in frames] == [i - i % 3 for i in range(30)]


def test_every_from_a_deployment_file_and_max_fps(counting: CountingPlugin, tmp_path: Path) -> None:
    path = tmp_path / "rate.yaml"
    path.write_text("source: testpattern\nprocessors: [{counting: {max-fps: 5}}]\noptions: {testpattern-fps: 50}\n")
    pipeline = Pipeline.from_file(path)
    started = time.monotonic()
    frames = list(pipeline.frames(max_frames=60))
    seconds = time.monotonic() - started
    ran = counting.made[0].ran
    assert len(ran) <= 5 * seconds + 1.5 and len(ran) >= 2, (len(ran), seconds)
    assert all("counting" in f.results for f in frames)
    assert pipeline.report()["processors"]["counting"]["skipped"] == len(frames) - len(ran)


def test_facedetect_every_3_through_the_cli(clip: Path) -> None:
    proc = run_cli(["run", "-s", str(clip), "-p", "facedetect", "-c", "facedetect-sync=true",
                    "-c", "facedetect-every=3", "-o", "none", "--benchmark"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    stage = json.loads(proc.stdout.strip().splitlines()[-1])["processors"]["facedetect"]
    assert stage["calls"] == 10 and stage["skipped"] == 20


def test_rate_options_are_listed_for_every_processor() -> None:
    for name in ("facedetect", "captions", "describe"):
        out = run_cli(["list", name]).stdout
        assert f"-c {name}-every=<int>  default 1" in out and f"-c {name}-max-fps=" in out
    assert "-every=" not in run_cli(["list", "mjpeg"]).stdout, "outputs take no rate option"


def test_bad_rate_values_are_config_errors(counting: CountingPlugin) -> None:
    with pytest.raises(ConfigError, match=r"counting-every.*greater than or equal to 1"):
        Pipeline("testpattern", ["counting"], options={"counting-every": 0}).build()
    with pytest.raises(ConfigError, match=r"counting-max-fps"):
        Pipeline("testpattern", ["counting"], options={"counting-max-fps": "fast"}).build()
    with pytest.raises(ConfigError, match=r"unknown option 'mjpeg-every'"):
        Pipeline("testpattern", ["counting"], ["mjpeg"], options={"mjpeg-every": 2}).build()
    proc = run_cli(["run", "-s", "testpattern", "-p", "fps", "-c", "fps-every=two", "-o", "none"], timeout=30)
    assert proc.returncode == 2 and "fps-every" in proc.stderr and "Traceback" not in proc.stderr
