"""The ``local`` backend through the VLMBackend interface, and every bad input the issue lists."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from local_vlm_helpers import image, messages

from framelens import BackendError, ConfigError, GenerationParams, ImagePart, TextPart, encode_jpeg
from framelens.plugins.vlm.local.backend import _ENGINES, LocalBackend
from framelens.plugins.vlm.local.options import LocalOptions


def _backend(path: Path, **kw: Any) -> LocalBackend:
    return LocalBackend(LocalOptions(model=str(path), max_context=kw.pop("max_context", 256),
                                     max_batch=kw.pop("max_batch", 4), device="cpu", **kw))


def _close(b: LocalBackend) -> None:
    asyncio.run(b.aclose())


def test_chat_stream_and_choose(tiny_dirs: dict[str, Path]) -> None:
    backend = _backend(tiny_dirs["llava"])
    try:
        jpeg = encode_jpeg(image(20), 90)
        msgs = [messages("describe the picture")[0].__class__(
            "user", (ImagePart(data=jpeg), TextPart("describe the picture")))]

        async def go() -> tuple[Any, list[Any], list[Any], list[Any]]:
            res = await backend.chat(msgs, GenerationParams(max_tokens=12))
            chunks = [c async for c in backend.stream(msgs, GenerationParams(max_tokens=12))]
            scored = await backend.choose([msgs, messages("is there a dog?", image(21))], ("yes", "no"),
                                          GenerationParams())
            several = await asyncio.gather(*(backend.chat(messages(f"say {i}", image(22 + i)),
                                                          GenerationParams(max_tokens=8)) for i in range(4)))
            return res, chunks, scored, several

        res, chunks, scored, several = asyncio.run(go())
        assert res.text and res.usage.completion_tokens == 12 and res.finish_reason == "length"
        assert res.model == str(tiny_dirs["llava"])
        assert "".join(c.text for c in chunks) == res.text  # greedy: the same answer both ways
        assert chunks[-1].finish_reason == "length" and chunks[-1].usage == res.usage
        assert len([c for c in chunks if c.text]) >= 3  # it really streamed
        assert len(scored) == 2 and all(abs(sum(s.probabilities.values()) - 1) < 1e-5 for s in scored)
        assert all(s.choice in ("yes", "no") and 0.5 <= s.probability <= 1 for s in scored)
        assert all(r.usage.completion_tokens >= 1 for r in several)
        assert backend.engine.stats["max_batch"] >= 2
        health = asyncio.run(backend.health())
        assert health.ready and "llava" in health.detail
    finally:
        _close(backend)


def test_backends_share_one_engine_and_release_it(tiny_dirs: dict[str, Path]) -> None:
    a = _backend(tiny_dirs["gemma3"])
    b = _backend(tiny_dirs["gemma3"])
    assert a.engine is b.engine
    _close(a)
    assert any(e is b.engine for e, _ in _ENGINES.values())
    _close(b)
    assert not any(e is b.engine for e, _ in _ENGINES.values())


def test_caller_going_away_frees_the_slot(tiny_dirs: dict[str, Path]) -> None:
    backend = _backend(tiny_dirs["llava"], max_tokens=200)
    try:
        async def go() -> None:
            gen = backend.stream(messages("describe the picture", image(5)), GenerationParams(max_tokens=200))
            async for chunk in gen:
                if chunk.text:
                    break
            await gen.aclose()
            for _ in range(500):
                if backend.engine.free_slots == backend.engine.slots:
                    return
                await asyncio.sleep(0.01)

        asyncio.run(go())
        assert backend.engine.free_slots == backend.engine.slots
        assert backend.engine.stats["cancelled"] >= 1
    finally:
        _close(backend)


def test_request_errors(tiny_dirs: dict[str, Path]) -> None:
    backend = _backend(tiny_dirs["llava"], max_context=64, max_images=2)
    try:
        def fail(msgs: Any, params: GenerationParams | None = None) -> BackendError:
            with pytest.raises(BackendError) as info:
                asyncio.run(backend.chat(msgs, params or GenerationParams(max_tokens=4)))
            return info.value

        too_long = fail(messages("a person walks past the red car " * 20, image(1)))
        assert too_long.kind == "bad_request" and "context of 64 tokens" in str(too_long)
        many = fail([messages("x")[0].__class__("user", (ImagePart(image=image(1)), ImagePart(image=image(2)),
                                                         ImagePart(image=image(3)), TextPart("compare")))])
        assert many.kind == "bad_request" and "at most 2" in str(many)
        broken = fail([messages("x")[0].__class__("user", (ImagePart(data=b"\xff\xd8 not a jpeg"),
                                                           TextPart("what is it")))])
        assert broken.kind == "bad_request" and "does not decode" in str(broken)
        other = fail(messages("hi"), GenerationParams(model="someone/else"))
        assert other.kind == "model_not_found" and other.status == 404
        schema = fail(messages("hi"), GenerationParams(json_schema={"type": "object"}))
        assert schema.kind == "unsupported"
        # the engine still works after all that
        ok = asyncio.run(backend.chat(messages("hi"), GenerationParams(max_tokens=3)))
        assert ok.usage.completion_tokens >= 1
    finally:
        _close(backend)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_model_errors(tiny_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: str) -> str:
        with pytest.raises(ConfigError) as info:
            LocalBackend(LocalOptions(model=path, device="cpu", max_context=128))
        return str(info.value)

    assert "no such directory" in fail(str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert "not in the Hugging Face cache" in fail("framelens-test/no-such-model")

    no_tok = _copy(tiny_dirs["llava"], tmp_path / "no-tok")
    (no_tok / "tokenizer.json").unlink()
    assert "no tokenizer" in fail(str(no_tok))

    no_weights = _copy(tiny_dirs["llava"], tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    assert "no *.safetensors" in fail(str(no_weights))

    corrupt = _copy(tiny_dirs["llava"], tmp_path / "corrupt")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    msg = fail(str(corrupt))
    assert "model.safetensors" in msg and "download it again" in msg

    garbage = _copy(tiny_dirs["llava"], tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    assert "not a valid safetensors file" in fail(str(garbage))

    arch = _copy(tiny_dirs["llava"], tmp_path / "arch")
    cfg = json.loads((arch / "config.json").read_text())
    cfg["architectures"] = ["MllamaForConditionalGeneration"]
    (arch / "config.json").write_text(json.dumps(cfg))
    msg = fail(str(arch))
    assert "MllamaForConditionalGeneration is not supported" in msg
    assert "LlavaForConditionalGeneration" in msg and "Gemma3ForConditionalGeneration" in msg
    assert "Qwen2_5_VLForConditionalGeneration" in msg

    no_cfg = _copy(tiny_dirs["llava"], tmp_path / "no-config")
    (no_cfg / "config.json").unlink()
    assert "no config.json" in fail(str(no_cfg))
    assert not _ENGINES or all(e.model.files.path not in (corrupt, arch) for e, _ in _ENGINES.values())


def test_every_option_is_documented() -> None:
    from helpers import ROOT

    text = (ROOT / "docs" / "backends" / "local.md").read_text()
    for field in LocalOptions.model_fields:
        assert f"| `local-{field.replace('_', '-')}` |" in text, f"docs/backends/local.md lacks local-{field}"
