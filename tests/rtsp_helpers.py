"""Helpers for the RTSP tests: framelens servers as subprocesses, OpenCV and ffprobe clients."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from framelens.opencv import open_ffmpeg_capture
from framelens.plugins.sources.testpattern import read_code

# Small and slow enough for two shared cores with other test suites running.
PATTERN = ["-s", "testpattern", "-c", "testpattern-width=320", "-c", "testpattern-height=240",
           "-c", "testpattern-fps=15"]
CLIENT_OPTIONS = {"rtsp_transport": "tcp"}


def port_is_listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Framelens:
    """``python -m framelens run ARGS`` in a subprocess, stopped with SIGINT like a user's Ctrl-C."""

    def __init__(self, args: Sequence[str], *, events: Path | None = None) -> None:
        self.args = list(args)
        self.events = events
        if events is not None:
            self.args += ["--events", str(events)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "framelens", "run", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.stdout = ""
        self.stderr = ""

    def wait_listening(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"framelens exited with {self.proc.returncode} before listening:\n{err}")
            if port_is_listening(port):
                return
            time.sleep(0.1)
        raise AssertionError(f"framelens did not listen on {port} within {timeout} s")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()
            raise AssertionError(f"framelens did not stop within {timeout} s:\n{self.stderr}") from None
        return self.proc.returncode

    def read_events(self) -> list[dict[str, Any]]:
        assert self.events is not None
        if not self.events.exists():
            return []
        lines = self.events.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def serving(port: int, *extra: str, events: Path | None = None,
            source: Sequence[str] = PATTERN) -> Iterator[Framelens]:
    """A framelens serving ``rtsp://127.0.0.1:PORT/out``; stopped (and checked) on exit."""
    fl = Framelens([*source, "-o", f"rtsp://127.0.0.1:{port}/out", *extra], events=events)
    try:
        fl.wait_listening(port)
        yield fl
    finally:
        rc = fl.stop()
    assert rc == 0, f"framelens exited with {rc}:\n{fl.stderr}"


def open_client(url: str, *, options: Mapping[str, str] = CLIENT_OPTIONS, timeout: float = 15) -> cv2.VideoCapture:
    """An OpenCV (FFmpeg) RTSP client with FFmpeg's default buffering, as a viewer would open it."""
    cap = open_ffmpeg_capture(url, options=options, open_timeout=timeout, read_timeout=timeout)
    assert cap.isOpened(), f"OpenCV could not open {url}"
    return cap


def read_frames(cap: cv2.VideoCapture, n: int) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for _ in range(n):
        ok, image = cap.read()
        assert ok, f"the stream stopped after {len(frames)} frames"
        frames.append(image)
    return frames


def codes(frames: Sequence[np.ndarray]) -> list[int]:
    return [read_code(f) for f in frames]


def assert_counter_advances(values: Sequence[int], *, at_least: int) -> None:
    """The test pattern's frame numbers never go back and move on by ``at_least``."""
    assert all(b >= a for a, b in zip(values, values[1:], strict=False)), f"went backwards: {values}"
    assert values[-1] - values[0] >= at_least, f"frame numbers did not advance: {values}"


def ffprobe(url: str, timeout: float = 30) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-select_streams", "v:0", "-show_streams",
         "-of", "json", url], capture_output=True, text=True, timeout=timeout, check=True)
    streams = json.loads(out.stdout)["streams"]
    assert len(streams) == 1, out.stdout
    return dict(streams[0])


class Collector(threading.Thread):
    """Reads a stream on a thread, keeping (monotonic time, frame number) for every frame."""

    def __init__(self, url: str, *, options: Mapping[str, str] = CLIENT_OPTIONS) -> None:
        super().__init__(daemon=True)
        self.url, self.options = url, options
        self.samples: list[tuple[float, int]] = []
        self.error: str | None = None
        self.last_image: np.ndarray | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            cap = open_client(self.url, options=self.options)
        except AssertionError as exc:
            self.error = str(exc)
            return
        try:
            while not self._halt.is_set():
                ok, image = cap.read()
                if not ok:
                    self.error = f"read failed after {len(self.samples)} frames"
                    return
                self.samples.append((time.monotonic(), read_code(image)))
                self.last_image = image
        finally:
            cap.release()

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(list(self.samples)):
                return
            if not self.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{what} (error: {self.error}; last frames: {[c for _, c in self.samples[-10:]]})")

    def stop(self) -> None:
        self._halt.set()
        self.join(20)
