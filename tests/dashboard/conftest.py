"""An in-process ``http`` service with the dashboard, a test pattern and a scripted backend.

The backend is :class:`framelens.testing.FakeBackend`: descriptions count up, an
alert rule whose question contains ``YES`` is answered "yes" (every other rule
"no"), and chat answers stream word by word, slowly enough to watch.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port

from framelens import BackendError, Context, Pipeline, Stream
from framelens.capture import LiveCapture
from framelens.runtime import Runtime
from framelens.testing import FakeBackend, FakeBackendPlugin, FakeRequest, plugin_registered

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


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``service(api_key=..., extra={...})`` starts one; all are stopped after the test."""
    started: list[Service] = []

    knobs: dict[str, bool] = {}
    plugin = FakeBackendPlugin("fake", make=lambda: scripted_backend(**knobs))

    def make(*, describe_fails: bool = False, **kwargs: Any) -> Service:
        knobs["describe_fails"] = describe_fails
        svc = Service(tmp_path, **kwargs)
        started.append(svc)
        svc.start()
        assert isinstance(plugin.last, FakeBackend)
        svc.backend = plugin.last
        return svc

    with plugin_registered(plugin, "dashboard-test-backend"):
        yield make
        for svc in started:
            svc.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless system Chromium (its own user-data-dir) driven by Playwright."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path="/usr/bin/chromium", headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``shots(page, name)`` saves a full-page screenshot in the test's output folder."""
    folder = tmp_path / "screenshots"
    folder.mkdir()

    def shot(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot
