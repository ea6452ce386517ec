"""The dashboard tests' service: an in-process ``http`` service with the dashboard, a test
pattern and a scripted backend (:class:`Service`), and the backend's fixed answers.

A module of its own rather than conftest.py, so that the tests can import it by a name no
other test folder uses (two folders' ``from conftest import`` collide in one pytest run).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from helpers import free_port

from framelens import BackendError, Context, Pipeline, Stream
from framelens.capture import LiveCapture
from framelens.runtime import Runtime
from framelens.testing import FakeBackend, FakeRequest

__all__ = ["CHAT_ANSWER", "CHROMIUM_ARGS", "DESCRIBE_ERROR", "Service", "scripted_backend"]

CHAT_ANSWER = "The camera shows a colourful test pattern with a moving frame counter in the middle"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


DESCRIBE_ERROR = "fake backend: connection refused by 127.0.0.1:11434"


def scripted_backend(*, describe_fails: bool = False) -> FakeBackend:
    counter = itertools.count(1)

    def fail(request: FakeRequest) -> BaseException | None:
        if describe_fails and request.text.startswith("DESCRIBE"):
            return BackendError(DESCRIBE_ERROR, kind="unreachable")
        return None

    def answer(request: FakeRequest) -> str:
        text = request.text
        if text.startswith("DESCRIBE"):
            return f"A test pattern, description number {next(counter)}"
        if "?" in text and "YES" in text:
            return "yes"
        if text.startswith("Is ") or "yes or no" in text.lower():
            return "no"
        return CHAT_ANSWER

    return FakeBackend(answer, chunk_delay=0.08, fail=fail)


class Service:
    """``framelens run -s testpattern -p http -p describe -p alerts`` in a thread of this process."""

    def __init__(self, tmp: Path, *, api_key: str | None = None, extra: dict[str, Any] | None = None,
                 processors: list[Any] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {
            "http-port": self.port, "http-host": "127.0.0.1",
            "testpattern-width": 320, "testpattern-height": 240, "testpattern-fps": 15,
            "describe-prompt": "DESCRIBE the picture", "describe-interval": 1.5,
            "alerts-interval": 0.5, "alerts-snapshot-dir": str(tmp / "snapshots"),
        }
        if api_key is not None:
            options["http-api-key"] = api_key
        options.update(extra or {})
        self.pipeline = Pipeline("testpattern", processors or ["http", "describe", "alerts"], ["none"],
                                 options=options, backend="fake")
        self.error: BaseException | None = None
        self.backend: FakeBackend | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:  # reported by the test that waits for the service
            self.error = exc

    def start(self) -> Service:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            try:
                # The HTTP service answers before the source's capture is open and the CLI stream
                # "main" is listed; tests that add streams of their own need it to be first.
                if (httpx.get(self.base + "/health", timeout=1).status_code in (200, 503)
                        and self._main_listed()):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the service did not start")

    @property
    def context(self) -> Context:
        runtime = self.pipeline.runtime
        assert isinstance(runtime, Runtime) and runtime.context is not None, "the service has not started"
        return runtime.context

    def add_stream(self, stream_id: str) -> None:
        """A second live test pattern under ``stream_id``, opened as a request would open it (no pipeline)."""
        capture = LiveCapture(self.context.make_source("testpattern"), stream_id, self.context.events)
        capture.start(wait_open=True)
        self.context.streams.add(Stream(stream_id, f"testpattern#{stream_id}", capture, origin="api",
                                        opened_at=time.time()))

    def _main_listed(self) -> bool:
        runtime = self.pipeline.runtime
        context = runtime.context if isinstance(runtime, Runtime) else None
        return context is not None and any(s.id == "main" for s in context.streams.list())

    def stop(self) -> None:
        self.pipeline.stop()
        self.thread.join(15)
