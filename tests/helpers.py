"""Shared test helpers: free ports, CLI subprocess runs, synthetic media."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(args: Sequence[str], *, timeout: float = 60, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m framelens ARGS`` and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "framelens", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, input=input)


def make_video(path: Path, *, frames: int = 30, size: tuple[int, int] = (320, 240), fps: float = 30.0,
               fourcc: str = "mp4v") -> Path:
    """Write a small synthetic video whose frame ``i`` has mean brightness ``8 * (i % 30)``."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(frames):
        img = np.full((h, w, 3), 8 * (i % 30), np.uint8)
        cv2.putText(img, str(i), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(img)
    writer.release()
    return path


def wait_ready(proc: subprocess.Popen[str], url: str, *, path: str = "/v1/health/ready", timeout: float = 30) -> None:
    """Wait until a ``framelens serve`` subprocess answers 200 on ``url + path``; fail with its stderr if it exits."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not come up within {timeout:g} s")
