"""Shared helpers for the benchmarks: synthetic inputs and median-of-runs timing."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake_ollama(delay: float, *extra_args: str) -> tuple[subprocess.Popen[bytes], str]:
    """tests/fakes' Ollama in its own process (so it takes no CPU from the measured interpreter).

    Returns the process and its base URL once it answers.
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.ollama_server", "--port", str(port), "--delay", str(delay), *extra_args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url, timeout=0.5)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the fake Ollama server did not start")


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
