"""bench/local_engine_check.py, the engine-vs-HF check behind the H200 run: on CPU always, on CUDA where there is one.

The check runs the engine with its CUDA step shapes (bucketed key windows, power-of-two batch
buckets) on any device, so the CPU case here covers the same code path as the GPU run, in float32.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="no CUDA GPU here"))]


def _check(family: str, path: Path, device: str, dtype: Any) -> list[dict[str, Any]]:
    import torch
    from local_engine import HFSide
    from local_engine_check import check_case

    from framelens.plugins.vlm.local.loading import check_model_dir
    from framelens.plugins.vlm.local.model import LoadedModel

    dev = torch.device(device)
    model = LoadedModel(check_model_dir(path), dev, dtype)
    return check_case(family, model, HFSide.load(path, dev, dtype), 12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["llava-qwen2", "gemma3"])
def test_float32_tokens_equal_hf(family: str, device: str, tiny_dirs: dict[str, Path]) -> None:
    import torch

    rows = _check(family, tiny_dirs[family], device, torch.float32)
    # on CUDA a last row compares the CUDA graphs with the same step launched eagerly
    assert [r["batch"] for r in rows] == [1, 1, 1, 3] + (["graphs-vs-eager"] if device == "cuda" else [])
    assert all(r["equal"] for r in rows), rows
    assert all(r["max_abs_logit_diff"] < 1e-4 for r in rows if r["batch"] == 1), rows
    assert max(r["distinct_tokens"] for r in rows if r["batch"] == 1) > 4, "degenerate answers test nothing"


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_reports_agreement(device: str, tiny_dirs: dict[str, Path]) -> None:
    import torch

    rows = _check("gemma3", tiny_dirs["gemma3"], device, torch.bfloat16)
    # bf16 may flip a near tie late in an answer: the check reports how far the answers agree
    for r in rows:
        agree, ours, ref = ([v] if isinstance(v, int) else v for v in (r["agree"], r["engine_len"], r["hf_len"]))
        assert all(0 <= a <= min(e, n) for a, e, n in zip(agree, ours, ref, strict=True)), r
        # "equal" is exactly "the answers agree all the way and have the same length"
        assert r["equal"] == all(a == e == n for a, e, n in zip(agree, ours, ref, strict=True)), r
    assert any(r["equal"] for r in rows), rows
