"""``framelens engine export``: a model as three ONNX graphs plus a ``genai_config.json``.

The graphs follow ONNX Runtime GenAI's contract and tensor names:

- ``vision.onnx``: ``pixel_values [F,3,H,W]`` -> ``image_features [F,N,hidden]`` (tower + projector);
- ``embedding.onnx``: ``input_ids [B,S]`` -> ``inputs_embeds [B,S,hidden]`` (image placeholders are
  scattered with the features on the host, the same way for every runtime);
- ``decoder.onnx``: ``inputs_embeds``, ``attention_mask [B,past+S]``, ``position_ids [B,S]``,
  ``past_key_values.N.key|value [B,kvH,past,hd]`` -> ``logits [B,S,V]``, ``present.N.key|value``.

``genai_config.json`` describes them in ORT GenAI's layout, with a ``framelens``
block (family, image size, tokens per image, KV layout, dtype, a hash of the
source weights) that :mod:`.onnx_runner` and :mod:`.tensorrt` check before use.
The graphs hold only standard ONNX ops (no ORT contrib ops), so TensorRT's ONNX
parser takes them too. Llava checkpoints export; Gemma 3 needs a 4-D mask input
for its bidirectional image blocks, which this exporter does not write yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from framelens import ChatMessage, ConfigError, ImagePart, TextPart

from .loading import ModelFiles, resolve_model
from .model import LoadedModel

__all__ = ["GENAI_CONFIG", "export_onnx", "weights_digest"]

log = logging.getLogger("framelens.local")

GENAI_CONFIG = "genai_config.json"


def weights_digest(files: ModelFiles) -> str:
    """A quick identity of the weights: sizes, mtimes-independent names and the first MiB of each file."""
    h = hashlib.sha256()
    for f in files.weights:
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:32]


class _Vision(nn.Module):
    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.vision = model.vision

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.vision(pixel_values)
        return out


class _Embedding(nn.Module):
    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder.embed(input_ids)
        return out


class _Step(nn.Module):
    """The transformers language model as one past/present step (the recipe proven exact in vlm_lab)."""

    def __init__(self, hf: Any, layers: int) -> None:
        super().__init__()
        self.lm = hf.model.language_model
        self.head = hf.lm_head
        self.layers = layers
        self.config = hf.config.text_config

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (self.head(out.last_hidden_state), *present)


def _export(module: nn.Module, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # TorchScript export: about 20x faster than dynamo here and exact (vlm_lab); sizes >= 2 in examples
        # so no dynamic dimension is specialised.
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)


def export_onnx(model: str, out: Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """Export ``model`` (hub id or folder) into ``out``; returns the ``genai_config.json`` path."""
    import transformers

    hf_lib: Any = transformers
    say = progress or (lambda msg: log.info("%s", msg))
    files = resolve_model(model)
    if files.family != "llava":
        why = ("its vision graph would fix one image grid, and the decoder needs 3-D mRoPE positions"
               if files.family == "qwen2_5_vl" else "Gemma 3 needs a 4-D attention mask for its image blocks")
        raise ConfigError(f"engine export: {files.family} models cannot be exported to ONNX yet ({why}); "
                          "use local-runtime=torch")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    loaded = LoadedModel(files, torch.device("cpu"), torch.float32)
    spec = loaded.spec
    if any(w is not None for w in spec.sliding):
        raise ConfigError("engine export: sliding-window decoders are not exported to ONNX yet")
    # the processor's own output size (crop, resize or fixed), from a camera-shaped frame
    probe = loaded.prompt([ChatMessage("user", (ImagePart(image=np.zeros((480, 640, 3), np.uint8)), TextPart("x")))])
    h, w = (int(d) for d in probe.pixels[0].shape[-2:])
    pv = torch.randn(2, 3, h, w)
    with torch.no_grad():
        tokens = int(loaded.vision(pv).shape[1])
    say(f"[1/3] vision.onnx ({tokens} tokens per {h}x{w} image)")
    _export(_Vision(loaded), (pv,), out / "vision.onnx", ["pixel_values"], ["image_features"],
            {"pixel_values": {0: "frames"}, "image_features": {0: "frames"}})
    say("[2/3] embedding.onnx")
    _export(_Embedding(loaded), (torch.zeros(2, 3, dtype=torch.long),), out / "embedding.onnx", ["input_ids"],
            ["inputs_embeds"], {"input_ids": {0: "batch", 1: "seq"}, "inputs_embeds": {0: "batch", 1: "seq"}})
    say(f"[3/3] decoder.onnx ({spec.layers} layers)")
    hf = hf_lib.AutoModelForImageTextToText.from_pretrained(files.path, attn_implementation="eager",
                                                        dtype=torch.float32).eval()
    b, s, p = 2, 3, 2
    past = [torch.randn(b, spec.kv_heads, p, spec.head_dim) for _ in range(2 * spec.layers)]
    names_past = [f"past_key_values.{i}.{k}" for i in range(spec.layers) for k in ("key", "value")]
    names_present = [f"present.{i}.{k}" for i in range(spec.layers) for k in ("key", "value")]
    axes: dict[str, dict[int, str]] = {
        "inputs_embeds": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past"} for n in names_past})
    axes.update({n: {0: "batch", 2: "total"} for n in names_present})
    with torch.no_grad():
        _export(_Step(hf, spec.layers), (torch.randn(b, s, spec.hidden), torch.ones(b, p + s, dtype=torch.long),
                                         torch.arange(p, p + s)[None].repeat(b, 1), *past),
                out / "decoder.onnx", ["inputs_embeds", "attention_mask", "position_ids", *names_past],
                ["logits", *names_present], axes)
    del hf
    config = {
        "model": {
            "type": files.family, "context_length": spec.max_positions, "vocab_size": spec.vocab,
            "eos_token_id": sorted(loaded.eos), "pad_token_id": files.text_config.get("pad_token_id"),
            "image_token_id": loaded.image_token,
            "vision": {"filename": "vision.onnx", "inputs": {"pixel_values": "pixel_values"},
                       "outputs": {"image_features": "image_features"}},
            "embedding": {"filename": "embedding.onnx", "inputs": {"input_ids": "input_ids"},
                          "outputs": {"inputs_embeds": "inputs_embeds"}},
            "decoder": {
                "filename": "decoder.onnx", "head_size": spec.head_dim, "hidden_size": spec.hidden,
                "num_attention_heads": spec.heads, "num_hidden_layers": spec.layers,
                "num_key_value_heads": spec.kv_heads,
                "inputs": {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"max_length": spec.max_positions, "do_sample": False, "past_present_share_buffer": False},
        "framelens": {
            "version": 1, "family": files.family, "text_type": files.text_type, "source": files.name,
            "weights_sha256": weights_digest(files), "image_size": [h, w], "tokens_per_image": tokens,
            "kv_layout": "past_present", "dtype": "float32", "scatter": "host",
        },
    }
    path = out / GENAI_CONFIG
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(path)
    say(f"exported to {out} in {time.monotonic() - started:.1f} s")
    return path
