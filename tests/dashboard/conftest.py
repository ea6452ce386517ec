"""The dashboard tests' fixtures: ``service`` (in-process services, see :mod:`dashboard_service`),
``browser`` (headless Chromium through Playwright) and ``shots`` (screenshots).

The backend is :class:`framelens.testing.FakeBackend`: descriptions count up, an
alert rule whose question contains ``YES`` is answered "yes" (every other rule
"no"), and chat answers stream word by word, slowly enough to watch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_service import CHROMIUM_ARGS, Service, scripted_backend

from framelens.testing import FakeBackend, FakeBackendPlugin, plugin_registered


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
