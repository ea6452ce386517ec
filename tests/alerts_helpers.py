"""Test helpers for the alerts plugin: a scripted VLM, a webhook receiver, a mosquitto broker, an MQTT listener.

The scripted VLM *looks* at each image: it reads the frame number that
``testpattern`` writes into the bottom strip of every frame and answers each
rule from a script such as "yes for frames 40-100". So an answer is right or
wrong for the frame the alerts processor really sent, and a test can check
that every transition happened at the frame the script says.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framelens import BackendError, decode_image
from framelens.plugins.sources.testpattern import read_code
from framelens.testing import FakeBackend, FakeRequest

__all__ = [
    "Script",
    "ScriptedVLM",
    "WebhookReceiver",
    "frame_of",
    "mosquitto",
    "wait_for",
]

Script = Callable[[int], Any]
"""``answer(frame_index)``: the model's answer text (or bool) for one rule."""


def frame_of(image: np.ndarray) -> int:
    """The frame number testpattern drew into ``image``."""
    return read_code(image)


def answer_for(prompt: str, script: dict[str, Script], index: int) -> Any:
    for key, fn in script.items():
        if key in prompt:
            return fn(index)
    return "I do not know that question"


class ScriptedVLM(FakeBackend):
    """A :class:`FakeBackend` that answers each rule from ``script`` (prompt substring -> fn(frame index)).

    ``down(index)`` true makes a request fail as if the server were unreachable;
    ``gate`` (an async callable) is awaited before answering, to hold requests.
    ``seen`` lists the frame numbers asked about, ``modes`` batch or per-rule per request.
    Register it with ``framelens.testing.backend_registered("scripted", vlm)``.
    """

    name = "scripted"

    def __init__(self, script: dict[str, Script], *, schema: bool = True,
                 down: Callable[[int], bool] = lambda i: False,
                 gate: Callable[[], Any] | None = None) -> None:
        supports = {"images", "max_tokens", "temperature"} | ({"json_schema"} if schema else set())
        super().__init__(self._answer, models=["scripted"], supports=supports)
        self.script = script
        self.down = down
        self.gate = gate
        self.seen: list[int] = []
        self.modes: list[str] = []

    async def _answer(self, request: FakeRequest) -> str:
        image = request.images()[0]
        assert image.data is not None
        index = frame_of(decode_image(image.data))
        self.seen.append(index)
        if self.gate is not None:
            await self.gate()
        if self.down(index):
            raise BackendError("cannot reach the scripted VLM at http://127.0.0.1:9/ (connection refused)",
                               kind="unreachable")
        if request.params.json_schema is not None:
            self.modes.append("batch")
            props = request.params.json_schema["properties"]
            answers = {}
            for rule_id, prop in props.items():
                value = answer_for(prop["description"], self.script, index)
                answers[rule_id] = value if isinstance(value, bool) else str(value)
            return json.dumps(answers)
        self.modes.append("per-rule")
        value = answer_for(request.messages[-1].text(), self.script, index)
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- webhook receiver --------------------------------------------------------------------------


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records JSON POSTs.

    The first ``fail_first`` requests get ``fail_status`` (with ``Retry-After:
    retry_after`` if given); ``times`` records when each request arrived.
    """

    def __init__(self, *, fail_first: int = 0, fail_status: int = 503, retry_after: str | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.attempts += 1
                receiver.times.append(time.monotonic())
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(receiver.fail_status)
                    if receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers.items()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- mosquitto ---------------------------------------------------------------------------------


class Broker:
    """A mosquitto process on 127.0.0.1:``port`` that can be stopped and started again."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.config = directory / "mosquitto.conf"
        # mosquitto 2.x refuses anonymous clients unless a listener allows them explicitly.
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    binary = find_mosquitto()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mosquitto is not installed; .ci/run installs Debian's mosquitto package")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); CI=true makes this a failure")
    broker = Broker(binary, tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def async_gate(condition: Callable[[], bool], timeout: float) -> Callable[[], Any]:
    """An async callable that waits (polling) until ``condition()`` or ``timeout`` seconds."""

    async def gate() -> bool:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return condition()

    return gate
