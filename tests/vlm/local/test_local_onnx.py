"""``framelens engine export`` graphs on ONNX Runtime: the same greedy tokens as transformers, batched too."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from local_vlm_helpers import image, messages, run_jobs

from framelens import ConfigError

pytest.importorskip("onnxruntime")

PROMPTS = [messages("describe the picture", image(40)),
           messages("is there smoke or fire in the kitchen? say why", image(41), system="you watch a camera")]


@pytest.fixture(scope="module")
def exported(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from framelens.plugins.vlm.local.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for family in ("llava", "llava-qwen2"):
        model = shutil.copytree(tiny_dirs[family], root / family)
        export_onnx(str(model), model / "onnx")
        out[family] = model
    return out


@pytest.fixture(scope="module")
def onnx_engines(exported: dict[str, Path]) -> Iterator[dict[str, Any]]:
    from framelens.plugins.vlm.local.options import LocalOptions
    from framelens.plugins.vlm.local.runtime import load_engine

    made = {f: load_engine(LocalOptions(model=str(p), runtime="onnx", device="cpu", max_context=256, max_batch=4,
                                        prefix_cache=2)) for f, p in exported.items()}
    yield made
    for e in made.values():
        e.close()


def test_export_writes_the_genai_layout(exported: dict[str, Path]) -> None:
    folder = exported["llava"] / "onnx"
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert config["model"]["decoder"]["outputs"]["present_value_names"] == "present.%d.value"
    assert config["framelens"]["tokens_per_image"] == 16 and config["framelens"]["kv_layout"] == "past_present"
    decoder = onnx.load(str(folder / "decoder.onnx"))
    onnx.checker.check_model(decoder)
    names = [i.name for i in decoder.graph.input]
    assert names[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert "past_key_values.3.value" in names
    assert {n.domain for n in decoder.graph.node} <= {"", "ai.onnx"}  # no ORT contrib ops: TensorRT can parse it


@pytest.mark.parametrize("family", ["llava", "llava-qwen2"])
def test_onnx_runtime_matches_hf_generate(family: str, onnx_engines: dict[str, Any], references: dict[str, Any],
                                          engines: dict[str, Any]) -> None:
    engine, ref = onnx_engines[family], references[family]
    assert engine.runtime == "onnx"
    prompts = [engine.model.prompt(m) for m in PROMPTS]
    (one,) = run_jobs(engine, prompts[:1], 20, keep_logits=True)
    (expected,), logits = ref.generate(PROMPTS[:1], 20)
    assert one.tokens == expected
    got = torch.stack(one.logits)
    assert torch.allclose(got, logits[: len(got), 0], atol=1e-4), (got - logits[: len(got), 0]).abs().max()
    batched = run_jobs(engine, prompts, 12)
    expected_batch, _ = ref.generate(PROMPTS, 12)
    assert [j.tokens for j in batched] == expected_batch
    torch_tokens = [j.tokens for j in run_jobs(engines[family], [engines[family].model.prompt(m) for m in PROMPTS],
                                               12)]
    assert torch_tokens == expected_batch


def test_onnx_prefix_reuse_and_choices(onnx_engines: dict[str, Any], engines: dict[str, Any]) -> None:
    import threading

    engine = onnx_engines["llava"]
    img = image(42)
    a = engine.model.prompt(messages("describe the picture", img, system="cam"))
    b = engine.model.prompt(messages("is it raining?", img, system="cam"))
    first = run_jobs(engine, [a], 8)[0].tokens
    second = run_jobs(engine, [b], 8)[0].tokens
    assert engine.prefix.hits >= 1
    ref = engines["llava"]
    assert [first, second] == [run_jobs(ref, [ref.model.prompt(m)], 8)[0].tokens
                               for m in (messages("describe the picture", img, system="cam"),
                                         messages("is it raining?", img, system="cam"))]
    ids = engine.choice_tokens(["yes", "no"])
    got: list[Any] = []
    done = threading.Event()
    engine.submit(engine.choice_job([a, b], ids, lambda k, v: (got.append(v), done.set())))
    assert done.wait(20)
    ref_got: list[Any] = []
    ref_done = threading.Event()
    ref.submit(ref.choice_job([ref.model.prompt(m) for m in (messages("describe the picture", img, system="cam"),
                                                             messages("is it raining?", img, system="cam"))],
                              ids, lambda k, v: (ref_got.append(v), ref_done.set())))
    assert ref_done.wait(20)
    assert torch.allclose(torch.tensor(got[0]), torch.tensor(ref_got[0]), atol=1e-4)


def test_auto_runtime_picks_onnx_on_the_cpu_when_graphs_are_there(exported: dict[str, Path],
                                                                  tiny_dirs: dict[str, Path]) -> None:
    from framelens.plugins.vlm.local.options import LocalOptions
    from framelens.plugins.vlm.local.runtime import load_engine

    with_graphs = load_engine(LocalOptions(model=str(exported["llava"]), device="cpu", max_context=128))
    without = load_engine(LocalOptions(model=str(tiny_dirs["llava"]), device="cpu", max_context=128))
    try:
        assert (with_graphs.runtime, without.runtime) == ("onnx", "torch")
    finally:
        with_graphs.close()
        without.close()


def test_onnx_errors(exported: dict[str, Path], tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    from framelens.plugins.vlm.local.onnx_export import export_onnx
    from framelens.plugins.vlm.local.options import LocalOptions
    from framelens.plugins.vlm.local.runtime import load_engine

    with pytest.raises(ConfigError, match="engine export"):
        load_engine(LocalOptions(model=str(tiny_dirs["llava"]), runtime="onnx", device="cpu",
                                 onnx_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="other weights"):
        load_engine(LocalOptions(model=str(tiny_dirs["llava-qwen2"]), runtime="onnx", device="cpu",
                                 onnx_dir=str(exported["llava"] / "onnx")))
    with pytest.raises(ConfigError, match="cannot be exported to ONNX yet"):
        export_onnx(str(tiny_dirs["gemma3"]), tmp_path / "g")
