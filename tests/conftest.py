"""Shared fixtures; the helpers behind them live in helpers.py (``tests/`` is on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import free_port, make_video


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    return make_video(tmp_path / "clip.mp4")
