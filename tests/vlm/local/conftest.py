"""Session fixtures of the local engine tests: tiny random models in the Hugging Face layout, and engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from local_vlm_helpers import make_engine

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from framelens.plugins.vlm.local.tiny import TINY_FAMILIES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny-vlms")
    return {f: build_tiny_model(f, root / f) for f in TINY_FAMILIES}


@pytest.fixture(scope="session")
def engines(tiny_dirs: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """One engine per family, without prefix cache (tests that need one make their own)."""
    made = {f: make_engine(p, prefix_slots=0) for f, p in tiny_dirs.items()}
    yield made
    for e in made.values():
        e.close()


@pytest.fixture(scope="session")
def references(tiny_dirs: dict[str, Path]) -> dict[str, Any]:
    from local_vlm_helpers import HFReference

    return {f: HFReference(p) for f, p in tiny_dirs.items()}
