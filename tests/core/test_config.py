"""Deployment files and command-line merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from framelens import ConfigError
from framelens.config import RunConfig, load_deployment, merge_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    return path


def test_full_deployment_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_URL", "rtsp://cam/1")
    cfg = load_deployment(write(tmp_path, """
source: ${CAM_URL}
processors:
  - blur
  - name: ollama
    id: second
    options: {model: moondream}
  - captions: {size: 0.8}
services: [http]
outputs: [mjpeg, {target: out.mp4, options: {fps: 10}}]
options:
  ollama-model: llava
backends:
  nim: {url: "${NIM_URL:-http://localhost:8000/v1}"}
run: {max-frames: 5, realtime: true}
"""))
    assert cfg.source == "rtsp://cam/1"
    assert [(s.name, s.id, s.options) for s in cfg.stages] == [
        ("blur", "blur", {}), ("ollama", "second", {"model": "moondream"}), ("captions", "captions", {"size": 0.8}),
        ("http", "http", {}),
    ]
    assert [(o.name, o.target, o.options) for o in cfg.outputs] == [
        ("mjpeg", "mjpeg", {}), ("", "out.mp4", {"fps": 10})]
    settings = {k: v for k, v, _ in cfg.raw_settings}
    assert settings == {"ollama-model": "llava", "nim-url": "http://localhost:8000/v1"}
    assert cfg.run == {"max-frames": 5, "realtime": True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: x\n", "unknown key 'sources' (did you mean source?)"),
        ("source: [1, 2]\n", "source: expected a locator"),
        ("processors:\n  - name: blur\n    opts: {}\n", "processors[0]: unknown key(s) opts"),
        ("processors:\n  - blur: 3\n", "processors[0].blur: expected a mapping"),
        ("run: {max-frame: 3}\n", "run.max-frame: unknown setting (did you mean max-frames?)"),
        ("run: {max-frames: many}\n", "run.max-frames: expected int, got 'many'"),
        ("source: ${NOPE_NOT_SET}\n", "source: environment variable NOPE_NOT_SET is not set"),
        ("source: [unclosed\n", "invalid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_deployment(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read deployment file /nonexistent.yaml"):
        load_deployment("/nonexistent.yaml")


def test_command_line_overrides_file(tmp_path: Path) -> None:
    cfg = load_deployment(write(tmp_path, "source: a.mp4\nprocessors: [blur]\noutputs: [mjpeg]\n"
                                          "options: {blur-ksize: 5}\nrun: {max-frames: 9}\n"))
    merge_cli(cfg, source="testpattern", stages=["fps"], outputs=["none"], settings=["blur-ksize=7"],
              run={"max-frames": 3, "realtime": None})
    assert cfg.source == "testpattern"
    assert [s.name for s in cfg.stages] == ["fps"]
    assert [o.target for o in cfg.outputs] == ["none"]
    assert cfg.raw_settings[-1] == ("blur-ksize", "7", "-c blur-ksize")
    assert cfg.run["max-frames"] == 3


def test_setting_without_equals_is_rejected() -> None:
    with pytest.raises(ConfigError, match="-c ollama-model: expected key=value"):
        merge_cli(RunConfig(), source=None, stages=[], outputs=[], settings=["ollama-model"], run={})


def test_output_urls_are_not_split_as_ids() -> None:
    cfg = merge_cli(RunConfig(), source=None, stages=["ollama:cam2"], outputs=["rtsp://0.0.0.0:8554/out", "mjpeg:pv"],
                    settings=[], run={})
    assert (cfg.stages[0].name, cfg.stages[0].id) == ("ollama", "cam2")
    assert (cfg.outputs[0].name, cfg.outputs[0].target) == ("", "rtsp://0.0.0.0:8554/out")
    assert (cfg.outputs[1].name, cfg.outputs[1].id) == ("mjpeg", "pv")
