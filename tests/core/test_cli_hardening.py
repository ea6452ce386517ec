"""Issue 10, the command line: bad deployment files and unwritable outputs are one line; quiet logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fakes import FakeOllama
from helpers import run_cli

from framelens.testing import run_pipeline


@pytest.mark.parametrize(("content", "expected"), [
    (b"source: testpattern\nrun:\n  max-frames: \xff\xfe\n", "not UTF-8 text (byte 0xff at offset"),
    (("source: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
    (("source: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n").encode(), "nested too deeply"),
])
def test_an_unreadable_deployment_file_is_one_line_naming_it(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_bytes(content)
    result = run_cli(["run", "-f", str(path)])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(path) in lines[0] and expected in lines[0]


@pytest.mark.parametrize("target", ["/proc/out.mp4", "/sys/out.avi"])
def test_an_output_path_that_cannot_be_written_says_so_and_why(target: str) -> None:
    result = run_cli(["run", "-s", "testpattern", "-o", target, "--max-frames", "3"])
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert f"-o {target}: the path cannot be written" in line and "(" in line, result.stderr
    assert "fourcc" not in line  # not blamed on the codec


def test_descriptions_are_logged_at_debug_and_recovery_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="framelens")
    with FakeOllama() as ollama:
        ollama.fail_next(500, {"error": "model runner crashed"}, path="/api/chat", times=2)
        report, _, _ = run_pipeline(["-s", "testpattern", "--fps", "30", "--max-frames", "120", "-p", "ollama",
                                     "-c", f"ollama-url={ollama.url}", "-c", "ollama-error-backoff=0.2",
                                     "-c", "ollama-retries=0", "-o", "none"])
    records = [r for r in caplog.records if r.name == "framelens.describer"]
    described = [r for r in records if "after capture" in r.getMessage()]
    recovered = [r for r in records if "answers again" in r.getMessage()]
    assert described and {r.levelno for r in described} == {logging.DEBUG}
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO, [r.getMessage() for r in records]
    assert report["frames"] == 120
