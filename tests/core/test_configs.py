"""Every shipped deployment file loads and validates against the installed plugins."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from framelens import Site
from framelens.config import load_deployment
from framelens.plugin_manager import get_plugin_manager
from framelens.runtime import Runtime

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_builds(path: Path) -> None:
    cfg = load_deployment(path)
    if cfg.cameras:
        site = Site(cfg, get_plugin_manager().registry)
        site.build()  # every camera validated and constructed, nothing opened
        assert site.cameras and all(c.source is not None and c.outputs for c in site.cameras.values())
        assert site.runtime is not None and site.runtime.context is not None
        site.runtime.context.close()
        return
    runtime = Runtime(cfg, get_plugin_manager().registry)
    runtime.build()  # validates every option and constructs every component without opening anything
    assert runtime.source is not None
    assert runtime.outputs
    assert runtime.context is not None
    runtime.context.close()


def test_configuration_doc_example_builds(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "deploy.yaml"
    path.write_text(block)
    runtime = Runtime(load_deployment(path), get_plugin_manager().registry)
    runtime.build()
    assert [s.id for s in runtime.stages] == ["ollama", "second", "captions"]
    assert [sid for sid, _ in runtime.services] == ["http"]
    assert [oid for oid, _ in runtime.outputs] == ["mjpeg", "file"]
    assert runtime.context is not None
    runtime.context.close()
