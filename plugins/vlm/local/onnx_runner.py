"""``local-runtime=onnx``: the engine's decoder and vision calls on ONNX Runtime (CPU).

:func:`attach_onnx` swaps a :class:`~.model.LoadedModel`'s decoder and vision
encoder for ONNX Runtime sessions over the graphs of :mod:`.onnx_export`. The
engine loop, batching, prefix cache and sampling stay the same: the decoder
graph's past/present tensors are read from and written back into the engine's
KV pool around each call (the ``past_present`` layout: portable, exact, and
the reason this runtime copies the KV it uses on every step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framelens import ConfigError

from .decoder import KVPool
from .model import LoadedModel
from .onnx_export import GENAI_CONFIG, weights_digest

__all__ = ["OrtDecoder", "OrtVision", "attach_onnx"]


def _session(path: Path) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    if not path.is_file():
        raise ConfigError(f"local-runtime=onnx: {path} is missing; run `framelens engine export MODEL "
                          f"{path.parent}`")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ConfigError(f"local-runtime=onnx: {path} does not load in ONNX Runtime: {exc}") from None


class OrtVision:
    """``vision.onnx`` as the engine's vision encoder."""

    def __init__(self, path: Path) -> None:
        self.session = _session(path)

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"pixel_values": pixel_values.float().numpy()})[0]
        return torch.from_numpy(out)


class OrtDecoder:
    """``embedding.onnx`` + ``decoder.onnx`` with the call signature of :class:`~.decoder.Decoder`."""

    def __init__(self, folder: Path, layers: int) -> None:
        self.embedding = _session(folder / "embedding.onnx")
        self.decoder = _session(folder / "decoder.onnx")
        self.layers = layers

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.embedding.run(None, {"input_ids": ids.cpu().numpy().astype(np.int64)})[0])

    def __call__(self, embeds: torch.Tensor, positions: torch.Tensor, pool: KVPool, rows: torch.Tensor,
                 read: torch.Tensor, window: int, masks: list[torch.Tensor], last: torch.Tensor) -> torch.Tensor:
        b, s = positions.shape
        valid = rows != pool.scratch
        starts = [int(positions[i, 0]) for i in range(b)]
        past = max(starts)
        mask = np.zeros((b, past + s), dtype=np.int64)
        for i in range(b):
            mask[i, : starts[i]] = 1
            mask[i, past:] = valid[i].numpy()
        feed: dict[str, np.ndarray] = {"inputs_embeds": embeds.float().numpy(), "attention_mask": mask,
                                       "position_ids": positions.numpy().astype(np.int64)}
        for layer in range(self.layers):
            feed[f"past_key_values.{layer}.key"] = pool.k[read, layer, :, :past].numpy()
            feed[f"past_key_values.{layer}.value"] = pool.v[read, layer, :, :past].numpy()
        logits, *present = self.decoder.run(None, feed)
        for i in range(b):
            n = int(valid[i].sum())
            slot, start = int(read[i]), starts[i]
            for layer in range(self.layers):
                pool.k[slot, layer, :, start:start + n] = torch.from_numpy(present[2 * layer][i, :, past:past + n])
                pool.v[slot, layer, :, start:start + n] = torch.from_numpy(present[2 * layer + 1][i, :, past:past + n])
        return torch.from_numpy(logits[np.arange(b), last.numpy()]).float()


def attach_onnx(model: LoadedModel, folder: Path) -> None:
    """Run ``model`` on the graphs in ``folder`` (checked against the model first)."""
    config_path = folder / GENAI_CONFIG
    if not config_path.is_file():
        raise ConfigError(f"local-runtime=onnx: {folder} has no {GENAI_CONFIG}; run `framelens engine export "
                          f"{model.name} {folder}` first (or set local-onnx-dir)")
    try:
        config = json.loads(config_path.read_text())
        block = config["framelens"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"local-runtime=onnx: {config_path} is not a framelens export ({exc})") from None
    if block.get("weights_sha256") != weights_digest(model.files):
        raise ConfigError(f"local-runtime=onnx: the graphs in {folder} were exported from other weights "
                          f"({block.get('source')}); export {model.name} again")
    if model.device.type != "cpu" or model.dtype != torch.float32:
        raise ConfigError("local-runtime=onnx runs on the CPU in float32: set local-device=cpu (and leave "
                          "local-dtype=auto)")
    model.vision = OrtVision(folder / "vision.onnx")  # type: ignore[assignment]
    model.decoder = OrtDecoder(folder, model.spec.layers)  # type: ignore[assignment]
