"""Session fixtures of the local engine tests: tiny random models in the Hugging Face layout, and engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from framelens.plugins.vlm.local.tiny import TINY_FAMILIES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny-vlms")
    return {f: build_tiny_model(f, root / f) for f in TINY_FAMILIES}


def make_engine(path: Path, **kw: Any) -> Any:
    import torch

    from framelens.plugins.vlm.local.engine import EngineAPI
    from framelens.plugins.vlm.local.loading import check_model_dir
    from framelens.plugins.vlm.local.model import LoadedModel

    model = LoadedModel(check_model_dir(path), torch.device("cpu"), torch.float32)
    return EngineAPI(model, slots=kw.pop("slots", 4), capacity=kw.pop("capacity", 256), **kw)


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
