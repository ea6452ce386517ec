"""The ``ollama`` / ``nim`` describers in real runs (``framelens run`` in-process) against fake servers."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOllama, FakeOpenAI, unused_url

from framelens import ConfigError, HasCaption
from framelens.plugins.sources.testpattern import read_code
from framelens.plugins.vlm.describer import Description
from framelens.plugins.vlm.ollama import DEFAULT_PROMPT
from framelens.testing import run_pipeline


def events_of(path: Path, type_: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["type"] == type_]


def describe_run(url: str, *extra: str, frames: int = 45, fps: int = 30, name: str = "ollama",
                 events: Path | None = None) -> tuple[dict[str, Any], list[Any], Any]:
    argv = ["-s", "testpattern", "--fps", str(fps), "--max-frames", str(frames), "-p", name,
            "-c", f"{name}-url={url}", "-o", "none", *extra]
    if events is not None:
        argv += ["--events", str(events)]
    report, output, runtime = run_pipeline(argv)
    return report, output.frames, runtime


def test_describes_the_newest_frame_and_publishes_it_everywhere(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with FakeOllama(token_delay=0.005) as ollama:
        report, frames, _ = describe_run(ollama.url, "-c", "ollama-max-side=320", events=events)
        chats = ollama.requests_to("/api/chat")
    assert report["frames"] == 45 and len(frames) == 45
    descriptions = events_of(events, "description")
    assert descriptions, "no description event"
    body = chats[0].json()
    assert body["messages"] == [{"role": "user", "content": DEFAULT_PROMPT, "images": body["messages"][0]["images"]}]
    assert body["options"] == {"num_predict": 128}
    # Every frame sent was shrunk to 320 px on the long side, keeping 4:3.
    assert {im.shape for im in ollama.images} == {(240, 320, 3)}
    for event in descriptions:
        p = event["payload"]
        assert p["text"] == "I see an image of 320x240."
        assert p["image"] == {"width": 320, "height": 240}
        assert p["staleness"] == 0  # the newest frame there was when the request was sent
        assert p["usage"]["completion_tokens"] == 6 and p["usage"]["prompt_tokens"] > 576
        assert p["latency_s"] > 0 and p["answered_at"] >= p["requested_at"] >= p["captured_at"]
        assert event["frame_index"] == p["frame_index"]
    # The picture the model got is the frame the description names (its number is drawn in it).
    sent = [read_code(im) for im in ollama.images]
    assert sent[: len(descriptions)] == [e["payload"]["frame_index"] for e in descriptions]
    final = [f for f in frames if isinstance(f.results.get("ollama"), Description)
             and not f.results["ollama"].partial]
    assert final, "no frame carried a final description"
    result = final[-1].results["ollama"]
    assert isinstance(result, HasCaption)
    caption = result.caption()
    assert caption is not None and caption.text == "I see an image of 320x240." and caption.level == "info"


def test_a_one_second_backend_does_not_slow_the_loop() -> None:
    # 100 frames at 50 fps take 2 s. If the loop waited for the backend, every frame
    # after the first would already carry its description; it must not.
    with FakeOllama(delay=1.0) as ollama:
        report, frames, _ = describe_run(ollama.url, "-c", "ollama-stream=false", frames=100, fps=50)
        calls = len(ollama.requests_to("/api/chat"))
    assert report["frames"] == 100 and len(frames) == 100
    undescribed = [f for f in frames if not isinstance(f.results.get("ollama"), Description)]
    assert len(undescribed) >= 25, f"only {len(undescribed)} frames went by during the first 1 s call"
    assert 1 <= calls <= 4
    stats = report["processors"]["ollama"]
    assert stats["worker"]["replaced"] >= 50  # frames offered while busy were dropped, not queued


def test_streaming_answers_grow_on_the_video() -> None:
    reply = "A bright test pattern with colour bars and a moving white box"
    with FakeOllama(reply=reply, token_delay=0.03) as ollama:
        # One call per run (interval 5 s): the next call's first tokens would otherwise replace
        # the finished answer within a frame or two, and which frames see it would be luck.
        _, frames, _ = describe_run(ollama.url, "-c", "ollama-interval=5", frames=60)
    seen = [f.results["ollama"] for f in frames if isinstance(f.results.get("ollama"), Description)]
    partial = [d.text for d in seen if d.partial]
    assert len(set(partial)) >= 3, partial
    assert all(reply.startswith(t) for t in partial)
    assert any(d.text == reply and not d.partial for d in seen)
    cap = next(d for d in seen if d.partial).caption()
    assert cap is not None and cap.text.endswith(" ...")


def test_backend_down_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="framelens")
    events = tmp_path / "events.jsonl"
    url = unused_url()
    port = int(url.rsplit(":", 1)[1])
    ollama = FakeOllama(port=port)
    timer = threading.Timer(1.2, ollama.start)
    timer.start()
    try:
        report, frames, _ = describe_run(url, "-c", "ollama-error-backoff=0.3", "-c", "ollama-retries=0",
                                         frames=105, fps=30, events=events)
    finally:
        timer.cancel()
        ollama.stop()
    assert report["frames"] == 105  # the video kept flowing
    # While down it backed off (0.5 s, capped at 0.3 s here) instead of asking on every frame.
    assert report["processors"]["ollama"]["worker"]["errors"] <= 8
    errors = [f.results["ollama"] for f in frames
              if isinstance(f.results.get("ollama"), Description) and f.results["ollama"].error]
    assert errors, "no frame showed the error"
    cap = errors[0].caption()
    assert cap is not None and cap.level == "error" and "not reachable" in cap.text
    logged = [r for r in caplog.records if r.name == "framelens.describer" and r.levelno >= logging.ERROR]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # said once, not on every attempt
    assert f"Ollama is not reachable at {url}" in logged[0].getMessage()
    states = [e["payload"]["state"] for e in events_of(events, "describer")]
    assert states == ["error", "ok"]
    assert events_of(events, "description"), "calls did not resume"
    assert isinstance(frames[-1].results["ollama"], Description) and not frames[-1].results["ollama"].error


def test_missing_model_says_how_to_fix_it(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with FakeOllama() as ollama:
        report, frames, _ = describe_run(ollama.url, "-c", "ollama-model=llava-phi3", events=events)
    assert report["frames"] == 45
    (error,) = events_of(events, "describer")
    assert error["payload"]["kind"] == "model_not_found"
    assert "ollama pull llava-phi3" in error["payload"]["message"]
    last = frames[-1].results["ollama"]
    assert last.error_kind == "model_not_found" and "llava-phi3" in last.caption().text


def test_interval_spaces_the_calls(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with FakeOllama() as ollama:
        describe_run(ollama.url, "-c", "ollama-interval=0.5", frames=45, events=events)
        calls = len(ollama.requests_to("/api/chat"))
    starts = [e["payload"]["requested_at"] for e in events_of(events, "description")]
    assert 2 <= calls <= 4 and len(starts) >= 2
    assert all(b - a >= 0.49 for a, b in zip(starts, starts[1:], strict=False))  # 30 fps would allow 0.03 s


def test_timeout_shows_on_the_caption_and_the_video_goes_on() -> None:
    with FakeOllama(delay=3.0) as ollama:
        report, frames, _ = describe_run(ollama.url, "-c", "ollama-timeout=0.4", "-c", "ollama-retries=0",
                                         frames=45)
    assert report["frames"] == 45
    errors = [f.results["ollama"] for f in frames if getattr(f.results.get("ollama"), "error", None)]
    assert errors and errors[-1].error_kind == "timeout"


def test_nim_describer_sends_a_clip_of_recent_frames(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with FakeOpenAI(token_delay=0.01) as nim:
        report, _, _ = describe_run(nim.base_url, "-c", "nim-frames=3", "-c", "nim-frame-spacing=0.1",
                                    "-c", "nim-system=Be brief.", name="nim", frames=60, events=events)
        bodies = [r.json() for r in nim.requests_to("/v1/chat/completions")]
        clip_ends = {read_code(v.frames[-1]) for v in nim.videos}
    assert report["frames"] == 60
    first = bodies[0]
    assert first["model"] == "nvidia/nemotron-nano-12b-v2-vl"
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first["messages"][1]["content"][0] == {
        "type": "text", "text": "Describe what is in this picture in one short sentence."}
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    clips = [b for b in bodies if b["messages"][1]["content"][1]["type"] == "video_url"]
    assert clips, "no clip was sent"
    assert clips[-1]["media_io_kwargs"] == {"video": {"num_frames": 3}}
    assert len(nim.videos[-1].frames) == 3
    # The clip's frames are distinct and in order (their spacing is checked below, without a clock).
    numbers = [read_code(f) for f in nim.videos[-1].frames]
    assert numbers == sorted(set(numbers))
    described = [e["payload"] for e in events_of(events, "description")]
    clip_answers = [p for p in described if p["frames"] == 3]
    assert clip_answers and all(p["text"] == "I see a video of 3 frames." for p in clip_answers)
    assert {p["frame_index"] for p in clip_answers} <= clip_ends  # each answer names the clip's newest frame


def test_backend_is_shared_and_a_second_describer_gets_its_own() -> None:
    with FakeOllama(models={"llava:latest": ["completion", "vision"],
                            "moondream:latest": ["completion", "vision"]}) as ollama:
        report, frames, runtime = describe_run(
            ollama.url, "-p", "ollama:cam2", "-c", f"cam2-url={ollama.url}", "-c", "cam2-model=moondream",
            "-c", "cam2-result-key=cam2", frames=45)
        models = {r.json()["model"] for r in ollama.requests_to("/api/chat")}
    first, second = (stage.processor for stage in runtime.stages)
    ctx = runtime.context
    assert ctx.backends()["ollama"] is first.backend  # what `serve`/alerts get from context.backend("ollama")
    assert ctx.backends()["cam2"] is second.backend and second.backend is not first.backend
    assert models == {"llava", "moondream"}
    keys = {k for f in frames for k, v in f.results.items() if isinstance(v, Description)}
    assert keys == {"ollama", "cam2"}
    assert report["frames"] == 45


@pytest.mark.parametrize(("argv", "message"), [
    (["-p", "ollama", "-c", "ollama-max-side=-5"], "ollama-max-side"),
    (["-p", "ollama", "-c", "ollama-url=localhost:11434"], "not an http:// or https:// URL"),
    (["-p", "nim", "-c", "nim-frames=0"], "nim-frames"),
    (["-p", "nim", "-c", "nim-detail=ultra"], "nim-detail"),
    (["-p", "ollama", "-c", "ollama-keep-alive=forever"], "duration"),
])
def test_bad_options_are_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_pipeline(["-s", "testpattern", "--max-frames", "1", "-o", "none", *argv])


@pytest.mark.parametrize(("page", "names"), [("ollama.md", ["ollama"]), ("nim.md", ["nim"])])
def test_docs_list_every_option(page: str, names: list[str]) -> None:
    from helpers import ROOT

    from framelens.plugins.vlm.ollama import OllamaDescriberOptions
    from framelens.plugins.vlm.openai import NimDescriberOptions

    text = (ROOT / "docs" / "backends" / page).read_text()
    model = OllamaDescriberOptions if page == "ollama.md" else NimDescriberOptions
    for ns in names:
        for field in model.model_fields:
            assert f"| `{ns}-{field.replace('_', '-')}` |" in text, f"{page} does not document {ns}-{field}"


def test_the_command_line_from_the_readme_works(tmp_path: Path) -> None:
    from helpers import run_cli

    with FakeOllama() as ollama:
        done = run_cli(["run", "-s", "testpattern", "--max-frames", "40", "-p", "ollama", "-c",
                        f"ollama-url={ollama.url}", "-c", "ollama-model=llava", "-p", "captions", "-o", "none",
                        "--events", "-"], timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    described = [e for e in lines if e["type"] == "description"]
    assert described and described[0]["payload"]["text"] == "I see an image of 640x480."
    assert described[0]["source"] == "main"


def test_clip_frames_are_spaced_by_capture_time() -> None:
    import numpy as np

    from framelens import Context, Frame
    from framelens.plugin_manager import get_plugin_manager
    from framelens.plugins.vlm.describer import Describer
    from framelens.plugins.vlm.openai import NimDescriberOptions

    ctx = Context(get_plugin_manager().registry)
    options = NimDescriberOptions.model_validate({"frames": 3, "frame_spacing": 0.25})
    describer = Describer(options, ctx, get_backend=lambda: ctx.backend("nim"), id="nim")
    image = np.zeros((4, 4, 3), np.uint8)
    frames = [Frame(image, i, 1000.0 + i * 0.1) for i in range(12)]  # 10 fps, not started: nothing is sent
    for frame in frames:
        describer.process(frame)
    clip = describer._clip(frames[-1])
    assert [f.index for f in clip] == [6, 9, 11]  # kept every 0.3 s (>= 0.25 s), newest frame last
    describer.process(frames[-1].replace(index=12, timestamp=1001.0))  # too close to 9 to be kept
    assert [f.index for f in describer._clip(frames[-1].replace(index=12, timestamp=1001.0))] == [6, 9, 12]
    ctx.close()


def test_processors_page_lists_every_describe_option() -> None:
    from helpers import ROOT

    from framelens.plugins.vlm import DescribeOptions

    text = (ROOT / "docs" / "processors.md").read_text()
    for field in DescribeOptions.model_fields:
        assert f"| `describe-{field.replace('_', '-')}` |" in text, f"processors.md does not document describe-{field}"


# -- describe: one describer for every backend ------------------------------------------------


def test_describe_asks_the_backend_it_names(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with FakeOpenAI() as server:
        _, output, _ = run_pipeline(["-s", "testpattern", "--fps", "30", "--max-frames", "60", "-p", "describe",
                                     "-c", "describe-backend=nim", "-c", f"nim-url={server.base_url}", "-o", "none",
                                     "--events", str(events)])
        frames = output.frames
        asked = server.requests_to("/v1/chat/completions")
    described = events_of(events, "description")
    assert described and described[0]["payload"]["text"] == "I see an image of 640x480."
    assert described[0]["payload"]["describer"] == "describe"
    assert asked and asked[0].json()["messages"][-1]["content"][0]["text"].startswith("Describe what is in")
    assert any(isinstance(f.results.get("describe"), Description) for f in frames)


def test_describe_follows_the_runs_backend_and_its_model_option(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    with FakeOpenAI(models=["a-model", "b-model"]) as server:
        run_pipeline(["-s", "testpattern", "--fps", "30", "--max-frames", "60", "--backend", "openai",
                      "-c", f"openai-url={server.base_url}", "-p", "describe", "-c", "describe-model=b-model",
                      "-c", "describe-stream=false", "-o", "none", "--events", str(events)])
        bodies = [r.json() for r in server.requests_to("/v1/chat/completions")]
    assert bodies and {b["model"] for b in bodies} == {"b-model"}
    assert all(b.get("stream") in (None, False) for b in bodies)
    assert events_of(events, "description")[0]["payload"]["model"] == "b-model"


def test_describe_and_an_alias_share_one_backend_per_name() -> None:
    with FakeOllama() as ollama:
        _, _, runtime = describe_run(ollama.url, "-c", "ollama-model=llava", "-p", "describe",
                                     "-c", "describe-backend=ollama", frames=30)
    stages = {s.id: s.processor for s in runtime.stages}
    assert stages["ollama"].backend is stages["describe"].backend  # type: ignore[attr-defined]


def test_describe_refuses_clips_on_a_backend_without_video() -> None:
    with FakeOllama() as ollama, pytest.raises(ConfigError, match="frames=4 sends video clips.*'ollama'"):
        describe_run(ollama.url, "-c", "ollama-frames=4")


def test_describe_with_an_unknown_backend_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"-c describe-backend=olama: unknown backend 'olama' \(did you mean"):
        run_pipeline(["-s", "testpattern", "--max-frames", "1", "-p", "describe", "-c", "describe-backend=olama",
                      "-o", "none"])
