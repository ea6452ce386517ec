"""Fixtures of the core tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT


@pytest.fixture(scope="session")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/example-plugin (a real distribution with an entry point) built and installed into a target
    dir, with no network and no framelens change: put it on PYTHONPATH to use it."""
    target = tmp_path_factory.mktemp("site")
    src = tmp_path_factory.mktemp("src") / "example-plugin"
    shutil.copytree(ROOT / "docs" / "example-plugin", src)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target
