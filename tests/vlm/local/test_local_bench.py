"""bench/local_engine.py stays runnable: its CPU-sized presets give the whole JSON line (GPU time is scarce,
so a bench that breaks must break here first)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.parametrize("preset", ["gemma3-mini", "qwen2.5-vl-mini"])
def test_bench_cpu_preset_prints_every_figure(preset: str) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "local_engine.py"), "--preset", preset,
                          "--repeats", "1", "--tokens", "4", "--batch", "2", "--rules", "3", "--capacity", "512"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    engine, hf = result["engine"], result["hf_generate"]
    for key in ("decode_tok_s_b1", "decode_tok_s_b2_total", "vision_s_per_image", "first_token_s",
                "frame_to_32_tokens_s", "captions_per_s_per_camera_b2"):
        assert engine[key] > 0 and hf[key] > 0, key
    assert engine["choices_3_rules_s"] > 0
    assert result["model"]["image_tokens"] > 200  # a camera frame at the preset's real image budget
    assert result["step_ms"]["engine"]["b1"] > 0 and result["step_ms"]["engine"]["b2"] > 0
    assert result["engine_eager"] is None  # the eager side runs on CUDA only
    assert 0 < result["fraction_of_limit"]["engine_b1"] < 1.5
