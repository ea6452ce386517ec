"""``framelens engine info|export|build|bench`` through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = pytest.mark.slow


def test_engine_info_and_bench(tiny_dirs: dict[str, Path]) -> None:
    done = run_cli(["engine", "info", str(tiny_dirs["gemma3"]), "--device", "cpu"], timeout=60)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["family"] == "gemma3" and info["layers"] == 4 and info["runtimes"] == ["torch"]
    assert 3_000_000 < info["parameters"] < 4_000_000
    assert info["memory_estimate_bytes"]["total"] > info["memory_estimate_bytes"]["weights"] > 0
    done = run_cli(["engine", "bench", str(tiny_dirs["llava"]), "--device", "cpu", "--tokens", "8", "--batch", "2",
                    "--max-context", "256"], timeout=90)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runtime"] == "torch" and result["image_tokens"] == 16
    assert result["decode_tok_s_b1"] > 0 and result["decode_tok_s_b2_total"] > 0 and result["first_token_s"] > 0


def test_engine_export_then_build_without_tensorrt(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    model = shutil.copytree(tiny_dirs["llava-qwen2"], tmp_path / "m")
    done = run_cli(["engine", "export", str(model), str(model / "onnx")], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[3/3] decoder.onnx" in done.stderr
    assert sorted(p.name for p in (model / "onnx").iterdir()) == [
        "decoder.onnx", "embedding.onnx", "genai_config.json", "vision.onnx"]
    done = run_cli(["engine", "build", str(model / "onnx")], timeout=60)
    assert done.returncode == 2
    assert "TensorRT is not installed" in done.stderr and "Traceback" not in done.stderr
