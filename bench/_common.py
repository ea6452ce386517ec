"""Shared helpers for the benchmarks: synthetic inputs and median-of-runs timing."""

from __future__ import annotations

import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def h264_file(width: int = 1280, height: int = 720, seconds: int = 20, fps: int = 30) -> Path:
    """A synthetic H.264 clip (ffmpeg's testsrc2), made once and cached in bench/out/."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"testsrc2_{width}x{height}_{fps}fps_{seconds}s.mp4"
    if not path.exists():
        if shutil.which("ffmpeg") is None:
            raise SystemExit("ffmpeg is needed to make the benchmark input (apt-get install ffmpeg)")
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{height}:rate={fps}", "-t", str(seconds), "-c:v", "libx264",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )
    return path


def median_of(runs: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values
