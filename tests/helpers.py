"""Shared test helpers: free ports, CLI subprocess runs, synthetic media."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


class TarPit:
    """A TCP server that accepts every connection and never sends a byte (or, with ``reply``, one line)."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.reply = reply
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted.append(time.monotonic())
            if self.reply is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(self.reply)
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self.listener.close()


@contextlib.contextmanager
def tar_pit(reply: bytes | None = None) -> Iterator[TarPit]:
    pit = TarPit(reply)
    try:
        yield pit
    finally:
        pit.close()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.02) -> float:
    """Poll ``predicate`` until it is true; the seconds it took. AssertionError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start
