"""The plugin guide documents every hook with its exact signature (as datasette does), and its
Python examples run as written."""

from __future__ import annotations

import inspect
import json
import re
import types
from pathlib import Path

import pytest
from helpers import ROOT

from framelens import hookspecs
from framelens.cli import main
from framelens.testing import plugin_registered

RUNNABLE = ("Typed factories and the component id", "Running a pipeline from Python", "Testing with FakeBackend",
            "A slow processor", "An HTTP route, complete")


def test_every_hook_is_documented() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [(name, fn) for name, fn in vars(hookspecs).items() if name.startswith("register_") and callable(fn)]
    assert len(hooks) >= 6
    for name, fn in hooks:
        params = list(inspect.signature(fn).parameters)
        args = ", ".join(params)
        assert f"### {name}({args})" in guide, f"docs/plugins.md lacks a section for {name}({args})"
        assert fn.__doc__ and f":param {params[0]}:" in fn.__doc__


def python_blocks(markdown: str, section: str) -> list[str]:
    body = markdown.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


@pytest.mark.parametrize("section", RUNNABLE)
def test_plugin_guide_examples_run(section: str) -> None:
    blocks = python_blocks((ROOT / "docs" / "plugins.md").read_text(), section)
    assert blocks, f"docs/plugins.md: no python example under '## {section}'"
    for block in blocks:
        exec(compile(block, f"docs/plugins.md ({section})", "exec"), {"__name__": "docs_example"})


def test_the_command_example_in_the_guide_adds_a_working_command(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    (block,) = re.findall(r"### register_commands\(cli\)\n.*?```python\n(.*?)```", guide, re.S)
    plugin = types.ModuleType("docs_watch")
    exec(compile(block, "docs/plugins.md (register_commands)", "exec"), vars(plugin))
    deployment = tmp_path / "watch.yaml"
    deployment.write_text("run: {max-frames: 5, benchmark: true}\n")
    with plugin_registered(plugin, "docs-watch"):
        assert main(["watch", "-f", str(deployment), "-p", "fps", "-c", "testpattern-fps=200"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["frames"] == 5 and report["processors"]["fps"]["calls"] == 5


def test_readme_python_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"## From Python\n.*?```python\n(.*?)```", readme, re.S)
    # No Ollama here: the video still plays and the descriptions say what is wrong.
    exec(compile(block.replace("max_frames=60", "max_frames=15"), "README.md", "exec"), {"__name__": "readme"})


def test_the_guides_example_plugin_is_the_shipped_one() -> None:
    """The files quoted at the top of docs/plugins.md are docs/example-plugin's, verbatim."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    quoted = re.findall(r"```python\n# (framelens_grayscale/[a-z_]+\.py)\n(.*?)```", guide, re.S)
    assert {path for path, _ in quoted} == {"framelens_grayscale/__init__.py", "framelens_grayscale/processor.py"}
    for path, body in quoted:
        assert body == (ROOT / "docs" / "example-plugin" / path).read_text(), f"docs/plugins.md quotes an old {path}"
