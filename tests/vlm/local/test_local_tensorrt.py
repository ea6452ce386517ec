"""What of the TensorRT path runs without TensorRT: the import guard, profile shapes, engine-cache keys.

Building and running engines needs an NVIDIA GPU and TensorRT, which CI does not have."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest

from framelens import ConfigError
from framelens.plugins.vlm.local import tensorrt as trt_mod

CONFIG = {"model": {"decoder": {"hidden_size": 256, "num_key_value_heads": 4, "head_size": 32,
                                "num_hidden_layers": 2}},
          "framelens": {"image_size": [32, 32], "dtype": "float32"}}


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def fake(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and (name == "tensorrt" or name.startswith("tensorrt.")):
            raise ModuleNotFoundError("No module named 'tensorrt'")
        return real(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_guard_names_how_to_install(tiny_dirs: dict[str, Path], no_tensorrt: None) -> None:
    with pytest.raises(ConfigError) as info:
        trt_mod.require_tensorrt()
    msg = str(info.value)
    assert "JetPack" in msg and "framelens[tensorrt]" in msg and "pypi.nvidia.com" in msg
    from framelens.plugins.vlm.local.options import LocalOptions
    from framelens.plugins.vlm.local.runtime import load_engine

    with pytest.raises(ConfigError, match="TensorRT is not installed"):
        load_engine(LocalOptions(model=str(tiny_dirs["llava"]), runtime="tensorrt"))


def test_decoder_profiles_cover_prefill_and_decode() -> None:
    prefill, decode = trt_mod.decoder_profiles(CONFIG, max_batch=8, max_context=512, max_prefill=256)
    assert prefill.shapes["inputs_embeds"] == ((1, 1, 256), (8, 128, 256), (8, 256, 256))
    assert prefill.shapes["past_key_values.0.key"] == ((1, 4, 0, 32), (8, 4, 0, 32), (8, 4, 256, 32))
    assert decode.shapes["inputs_embeds"] == ((1, 1, 256), (8, 1, 256), (8, 1, 256))
    assert decode.shapes["past_key_values.1.value"] == ((1, 4, 1, 32), (8, 4, 256, 32), (8, 4, 511, 32))
    assert decode.shapes["attention_mask"] == ((1, 2), (8, 257), (8, 512))
    for prof in (prefill, decode):  # every input of the exported graph has a range
        assert {"inputs_embeds", "attention_mask", "position_ids"} <= set(prof.shapes)
        assert len([k for k in prof.shapes if k.startswith("past_key_values.")]) == 4
        for lo, opt, hi in prof.shapes.values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
    with pytest.raises(ConfigError):
        trt_mod.decoder_profiles(CONFIG, max_batch=8, max_context=128, max_prefill=256)
    (vision,) = trt_mod.vision_profiles(CONFIG, max_images=4)
    assert vision.shapes["pixel_values"] == ((1, 3, 32, 32), (4, 3, 32, 32), (4, 3, 32, 32))


def test_engine_cache_key_changes_with_what_the_engine_depends_on(tmp_path: Path) -> None:
    onnx_file = tmp_path / "decoder.onnx"
    onnx_file.write_bytes(b"graph-1")
    profiles = trt_mod.decoder_profiles(CONFIG, max_batch=8, max_context=512, max_prefill=256)
    key = trt_mod.engine_key(onnx_file, "10.16.0", "Orin|sm87", profiles, "float16")
    assert key == trt_mod.engine_key(onnx_file, "10.16.0", "Orin|sm87", profiles, "float16")
    others = {
        trt_mod.engine_key(onnx_file, "11.4.0", "Orin|sm87", profiles, "float16"),
        trt_mod.engine_key(onnx_file, "10.16.0", "NVIDIA H200|sm90", profiles, "float16"),
        trt_mod.engine_key(onnx_file, "10.16.0", "Orin|sm87",
                           trt_mod.decoder_profiles(CONFIG, max_batch=4, max_context=512, max_prefill=256), "float16"),
        trt_mod.engine_key(onnx_file, "10.16.0", "Orin|sm87", profiles, "bfloat16"),
    }
    onnx_file.write_bytes(b"graph-2")
    others.add(trt_mod.engine_key(onnx_file, "10.16.0", "Orin|sm87", profiles, "float16"))
    assert key not in others and len(others) == 5
    assert json.dumps(profiles[0].as_json())  # the manifest form is JSON
