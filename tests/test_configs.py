"""Every shipped deployment file loads and validates against the installed plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from framelens.config import load_deployment
from framelens.plugin_manager import get_plugin_manager
from framelens.runtime import Runtime

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_builds(path: Path) -> None:
    cfg = load_deployment(path)
    runtime = Runtime(cfg, get_plugin_manager().registry)
    runtime.build()  # validates every option and constructs every component without opening anything
    assert runtime.source is not None
    assert runtime.outputs
    assert runtime.context is not None
    runtime.context.close()
