"""File outputs: recordings read back with OpenCV, atomic publication, errors; and ``none``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import make_video, run_cli

from framelens import ConfigError, Context, Frame, OutputError
from framelens.plugins.outputs.videofile import FileOptions, VideoFileOutput
from framelens.registry import Registry
from framelens.testing import run_pipeline


def read_back(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cannot open {path}"
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".mkv", ".mov"])
def test_round_trip_keeps_count_size_order_and_rate(tmp_path: Path, ext: str) -> None:
    clip = make_video(tmp_path / "in.mp4", frames=30, size=(160, 120), fps=25)
    out = tmp_path / f"out{ext}"
    report, _, _ = run_pipeline(["-s", str(clip), "-o", str(out)])
    assert report["frames"] == 30
    frames, fps = read_back(out)
    assert len(frames) == 30
    assert {f.shape for f in frames} == {(120, 160, 3)}
    assert fps == pytest.approx(25)  # the source's rate, since no file-fps was given
    means = [float(f[:20, :20].mean()) for f in frames]
    assert all(abs(m - 8 * i) < 8 for i, m in enumerate(means)), means
    assert leftovers(tmp_path) == []


def test_fps_option_and_live_source_rate(tmp_path: Path) -> None:
    out = tmp_path / "pattern.avi"
    run_pipeline(["-s", "testpattern", "-c", "testpattern-width=64", "-c", "testpattern-height=48",
                  "-c", "testpattern-fps=200", "--max-frames", "10", "-o", str(out)])
    frames, fps = read_back(out)
    assert len(frames) == 10 and fps == pytest.approx(200)
    out2 = tmp_path / "slow.avi"
    run_pipeline(["-s", "testpattern", "-c", "testpattern-width=64", "-c", "testpattern-height=48",
                  "-c", "testpattern-fps=200", "--max-frames", "10", "-o", str(out2), "-c", "file-fps=12"])
    assert read_back(out2)[1] == pytest.approx(12)


def test_file_output_by_name_with_a_path_option(tmp_path: Path) -> None:
    out = tmp_path / "named.mkv"
    run_pipeline(["-s", "testpattern", "-c", "testpattern-fps=200", "--max-frames", "3", "-o", "file",
                  "-c", f"file-path={out}"])
    assert len(read_back(out)[0]) == 3


def test_size_changes_are_resized_to_the_first_size(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, (w, h) in enumerate([(80, 60), (160, 120), (80, 60)]):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((h, w, 3), 50 * (i + 1), np.uint8))
    out = tmp_path / "mixed.avi"
    run_pipeline(["-s", str(folder), "-o", str(out)])
    frames, _ = read_back(out)
    assert [f.shape for f in frames] == [(60, 80, 3)] * 3


def make_output(path: Path, **options: object) -> tuple[VideoFileOutput, Context]:
    context = Context(Registry())
    return VideoFileOutput(str(path), FileOptions.model_validate(options), context), context


def test_the_final_name_appears_only_when_closed(tmp_path: Path) -> None:
    out = tmp_path / "atomic.mp4"
    output, context = make_output(out)
    output.start()
    for i in range(5):
        output.write(Frame(np.full((48, 64, 3), i * 40, np.uint8), i, time.time()))
    deadline = time.monotonic() + 10
    while output.frames_written < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not out.exists()
    assert output.temp_path.exists() and output.temp_path.parent == out.parent
    assert output.temp_path.name.startswith(".") and output.temp_path.suffix == ".mp4"
    output.close()
    context.close()
    assert out.exists() and not output.temp_path.exists()
    assert len(read_back(out)[0]) == 5


def test_no_frames_means_no_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.mp4"
    output, context = make_output(out)
    output.start()
    output.close()
    context.close()
    assert not out.exists() and leftovers(tmp_path) == []


def record(tmp_path: Path, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "framelens", "run", "-s", "testpattern", "-c", "testpattern-width=160",
         "-c", "testpattern-height=120", "-c", "testpattern-fps=50", "-o", str(out), "--benchmark"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while not any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the recording never started"
        time.sleep(0.05)
    time.sleep(1.0)
    return proc


def test_killed_run_leaves_no_file_under_the_final_name(tmp_path: Path) -> None:
    out = tmp_path / "crash.mp4"
    proc = record(tmp_path, out)
    proc.kill()
    proc.communicate(timeout=10)
    assert not out.exists()
    assert [p for p in leftovers(tmp_path) if p.endswith(".partial.mp4")]  # only the hidden temp file


def test_interrupted_run_publishes_a_complete_file(tmp_path: Path) -> None:
    out = tmp_path / "stopped.mp4"
    proc = record(tmp_path, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    frames, fps = read_back(out)
    assert len(frames) == report["frames"] > 10
    assert fps == pytest.approx(50)
    assert leftovers(tmp_path) == []


# -- errors ------------------------------------------------------------------------------------


def test_errors_are_reported_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="folder .*missing does not exist"):
        run_pipeline(["-s", "testpattern", "-o", str(tmp_path / "missing" / "x.mp4")])
    with pytest.raises(OutputError, match="cannot write 'avc1' into .mp4.*file-fourcc=mp4v"):
        run_pipeline(["-s", "testpattern", "-o", str(tmp_path / "x.mp4"), "-c", "file-fourcc=avc1"])
    (tmp_path / "kept.avi").write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists and file-overwrite is false"):
        run_pipeline(["-s", "testpattern", "-o", str(tmp_path / "kept.avi"), "-c", "file-overwrite=false"])
    assert (tmp_path / "kept.avi").read_bytes() == b"precious"
    with pytest.raises(ConfigError, match="-o file: set the file"):
        run_pipeline(["-s", "testpattern", "-o", "file"])
    with pytest.raises(ConfigError, match="file-fourcc.*4 ASCII"):
        run_pipeline(["-s", "testpattern", "-o", str(tmp_path / "x.mp4"), "-c", "file-fourcc=h264x"])
    with pytest.raises(ConfigError, match="no output understands"):
        run_pipeline(["-s", "testpattern", "-o", str(tmp_path / "x.xyz")])
    assert leftovers(tmp_path) == []


def test_cli_exit_status_for_an_unwritable_target(tmp_path: Path) -> None:
    result = run_cli(["run", "-s", "testpattern", "--max-frames", "2", "-o", str(tmp_path / "no" / "out.mp4")])
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_none_output_discards_frames() -> None:
    report, out, runtime = run_pipeline(["-s", "testpattern", "-c", "testpattern-fps=500", "--max-frames", "7",
                                         "-o", "none"])
    assert report["frames"] == 7 and len(out.frames) == 7
    assert getattr(runtime.outputs[0][1], "frames", None) == 7
