"""Qwen2.5-VL in the local engine: mRoPE positions, the pixel budget, the processor fallback, old configs."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from local_vlm_helpers import image, messages, run_jobs

from framelens import ChatMessage, ConfigError, ImagePart, TextPart

FAMILY = "qwen2_5_vl"


def two_images(text: str) -> list[ChatMessage]:
    # different aspect ratios: two different patch grids in one prompt
    return [ChatMessage("user", (ImagePart(image=image(21)), TextPart("and then"),
                                 ImagePart(image=image(22, h=80, w=40)), TextPart(text)))]


CONVERSATIONS = [
    messages("the door is open and a delivery van waits outside"),
    messages("describe the picture", image(1)),
    two_images("what changed between the two pictures?"),
]


def test_rope_index_equals_transformers_get_rope_index(engines: dict[str, Any], references: dict[str, Any]) -> None:
    engine, ref = engines[FAMILY], references[FAMILY]
    inputs = ref.inputs(CONVERSATIONS)  # left-padded batch, as generate() sees it
    hf_pos, hf_delta = ref.model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"])
    for row, conv in enumerate(CONVERSATIONS):
        prompt = engine.model.prompt(conv)
        keep = inputs["attention_mask"][row].bool()
        assert prompt.ids == inputs["input_ids"][row][keep].tolist()
        assert prompt.rope == hf_pos[:, row, keep].tolist()
        assert prompt.rope_delta == int(hf_delta[row])
    images = [engine.model.prompt(c) for c in CONVERSATIONS[1:]]
    assert [len(p.grids) for p in images] == [1, 2] and images[1].grids[0] != images[1].grids[1]
    assert all(p.rope_delta < 0 for p in images)  # after an image the rotary position lags the KV index


def test_two_image_grids_match_hf_generate(engines: dict[str, Any], references: dict[str, Any]) -> None:
    engine, ref = engines[FAMILY], references[FAMILY]
    conv = CONVERSATIONS[2]
    prompt = engine.model.prompt(conv)
    (job,) = run_jobs(engine, [prompt], 16, keep_logits=True)
    (expected,), logits = ref.generate([conv], 16)
    assert len(set(expected)) > 4, "degenerate reference output tests nothing"
    assert job.tokens == expected
    got = torch.stack(job.logits)
    assert torch.allclose(got, logits[: len(got), 0], atol=1e-4, rtol=1e-4)


def test_rotating_at_the_kv_index_would_be_caught(engines: dict[str, Any], references: dict[str, Any]) -> None:
    """The control of the parity tests: 1-D positions (the KV index) instead of mRoPE give other logits."""
    engine, ref = engines[FAMILY], references[FAMILY]
    conv = CONVERSATIONS[1]
    prompt = engine.model.prompt(conv)
    flat = dataclasses.replace(prompt, rope=None, rope_delta=0)
    (right,) = run_jobs(engine, [prompt], 8, keep_logits=True)
    (wrong,) = run_jobs(engine, [flat], 8, keep_logits=True)
    (expected,), logits = ref.generate([conv], 8)
    assert right.tokens == expected
    assert not torch.allclose(wrong.logits[0], logits[0, 0], atol=1e-3)


def _loaded(path: Path, max_pixels: int) -> Any:
    from framelens.plugins.vlm.local.loading import check_model_dir
    from framelens.plugins.vlm.local.model import LoadedModel

    return LoadedModel(check_model_dir(path), torch.device("cpu"), torch.float32, max_pixels=max_pixels)


def test_pixel_budget_fixes_the_token_count(tiny_dirs: dict[str, Path]) -> None:
    from framelens.plugins.vlm.local.options import LocalOptions

    assert LocalOptions().max_pixels == 448 * 448
    model = _loaded(tiny_dirs[FAMILY], 224 * 224)
    assert model.max_pixels == 224 * 224
    counts = {}
    for h, w in ((480, 640), (720, 960), (960, 1280)):  # one aspect ratio, as a stream's frames
        p = model.prompt(messages("describe", image(5, h=h, w=w)))
        counts[(h, w)] = (p.spans[0].end - p.spans[0].start, p.grids[0])
    assert len(set(counts.values())) == 1, counts
    tokens = next(iter(counts.values()))[0]
    assert 0 < tokens <= 224 * 224 // (28 * 28)
    # the checkpoint's own budget (112x112 px) when the option is 0: fewer tokens for the same frame
    own = _loaded(tiny_dirs[FAMILY], 0)
    assert own.max_pixels == 112 * 112
    small = own.prompt(messages("describe", image(5, h=480, w=640)))
    assert small.spans[0].end - small.spans[0].start < tokens
    with pytest.raises(ConfigError, match="local-max-pixels=100"):
        _loaded(tiny_dirs[FAMILY], 100)


def test_processor_loads_without_a_video_processor(tiny_dirs: dict[str, Path]) -> None:
    import transformers

    from framelens.plugins.vlm.local.qwen import load_processor

    path = tiny_dirs[FAMILY]
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(OSError, match="video processor"):
            transformers.AutoProcessor.from_pretrained(path)  # why the fallback exists
    proc = load_processor(path, ["Qwen2_5_VLForConditionalGeneration"])
    assert type(proc).__name__ == "Qwen2_5_VLProcessor" and proc.video_processor is None
    assert proc.tokenizer.convert_tokens_to_ids("<|image_pad|>") == proc.image_token_id
    with pytest.raises(OSError):  # other families get AutoProcessor's own error, no fallback
        load_processor(path, ["LlavaForConditionalGeneration"])


def test_older_flat_config_with_rope_scaling_mrope() -> None:
    from framelens.plugins.vlm.local.decoder import DecoderSpec
    from framelens.plugins.vlm.local.loading import ModelFiles

    flat = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "vocab_size": 512, "hidden_size": 256, "num_attention_heads": 8, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "intermediate_size": 688, "rope_theta": 1e6,
            "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}, "vision_config": {}}
    files = ModelFiles(Path("."), "old-qwen", flat, "qwen2_5_vl", ())
    spec = DecoderSpec.from_config(files.text_config, tied=False)
    assert spec.mrope == (4, 6, 6) and spec.qkv_bias and not spec.o_bias
    assert spec.rope[0][1] == pytest.approx(1e6 ** (-2 / 32))
    bad = {**files.text_config, "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 8]}}
    with pytest.raises(ConfigError, match="mrope_section"):
        DecoderSpec.from_config(bad, tied=False)


def test_onnx_export_is_refused_with_the_reason(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    from framelens.plugins.vlm.local.onnx_export import export_onnx

    with pytest.raises(ConfigError, match="qwen2_5_vl models cannot be exported to ONNX yet .*mRoPE"):
        export_onnx(str(tiny_dirs[FAMILY]), tmp_path / "q")
    assert not (tmp_path / "q").exists()  # refused before writing anything


def test_describer_on_qwen_from_the_cli_with_a_pixel_budget(tiny_dirs: dict[str, Path]) -> None:
    import json

    from helpers import run_cli

    done = run_cli(["run", "-s", "testpattern", "--fps", "30", "--max-frames", "45", "-p", "local",
                    "-c", f"local-model={tiny_dirs[FAMILY]}", "-c", "local-max-tokens=6", "-c", "local-interval=0",
                    "-c", "local-max-pixels=50176", "-c", "local-max-context=256", "-o", "none", "--events", "-"],
                   timeout=90)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    described = [e["payload"] for e in events if e.get("type") == "description" and not e["payload"].get("partial")]
    assert len(described) >= 2, done.stderr
    assert all(d["text"] for d in described)
    prompt_tokens = {d["usage"]["prompt_tokens"] for d in described}
    # every frame of the stream costs the same: 224x224 px at most 64 image tokens, plus the text
    assert len(prompt_tokens) == 1 and 20 < prompt_tokens.pop() <= 64 + 40, described[0]["usage"]
