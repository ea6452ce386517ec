"""The command line as a user meets it."""

from __future__ import annotations

import json

from helpers import run_cli

import framelens


def test_version() -> None:
    proc = run_cli(["version"])
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"framelens {framelens.__version__}"


def test_run_help_has_examples() -> None:
    proc = run_cli(["run", "--help"])
    assert proc.returncode == 0
    assert "examples:" in proc.stdout
    assert "-p ollama -c ollama-model=llava -p captions -o mjpeg" in proc.stdout


def test_no_command_prints_help_and_fails() -> None:
    proc = run_cli([])
    assert proc.returncode == 2
    assert "run" in proc.stdout and "serve" in proc.stdout


def test_bad_flag_value_is_a_usage_error() -> None:
    proc = run_cli(["run", "--max-frames", "lots"])
    assert proc.returncode == 2
    assert "--max-frames: invalid int value: 'lots'" in proc.stderr


def test_non_positive_numbers_are_rejected() -> None:
    proc = run_cli(["run", "-s", "testpattern", "-o", "none", "--max-frames", "0"])
    assert proc.returncode == 2
    assert "--max-frames: must be a positive number, got 0" in proc.stderr


def test_unknown_option_exits_2_with_one_line_and_no_traceback() -> None:
    proc = run_cli(["run", "-s", "testpattern", "-c", "testpattern-fsp=3", "-o", "none"])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "framelens: error: -c testpattern-fsp: unknown option 'testpattern-fsp' (did you mean testpattern-fps"
    )


def test_unsupported_capture_request_is_rejected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli(["run", "-s", "testpattern", "--width", "-5", "-o", "none"])
    assert proc.returncode == 2 and "--width: must be a positive number" in proc.stderr


def test_capture_requests_reach_the_source() -> None:
    proc = run_cli(["run", "-s", "testpattern", "--width", "320", "--height", "200", "--fps", "100", "-o", "none",
                    "--max-frames", "3", "--events", "-"])
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    connected = next(e for e in events if e["type"] == "source")
    assert connected["payload"]["width"] == 320 and connected["payload"]["height"] == 200
    assert connected["payload"]["fps"] == 100


def test_deployment_file_and_flag_override(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d.yaml"
    path.write_text("source: testpattern\noutputs: [none]\noptions: {testpattern-fps: 100}\n"
                    "run: {max-frames: 4, benchmark: true}\n")
    proc = run_cli(["run", "-f", str(path), "--max-frames", "2"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["frames"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: testpattern\nprocessors:\n  - name: testpattern\n")
    proc = run_cli(["run", "-f", str(bad)])
    assert proc.returncode == 2
    assert f"{bad}: processors[0]: unknown processor 'testpattern'" in proc.stderr
