"""``local-runtime=tensorrt`` and ``framelens engine build``: TensorRT engines from the exported ONNX graphs.

Written against TensorRT 10 (JetPack) and 11: strongly typed networks (the
precision lives in the exported graphs; TensorRT 11 removed the FP16/BF16
builder flags), two optimization profiles for the decoder (prefill: many new
tokens and no past; decode: one token per row and a past up to the context),
one for the vision graph, a timing cache kept next to the engines, and an
engine cache keyed by the ONNX file's hash, the TensorRT version, the GPU and
the profiles, so an engine built for another GPU or version is rebuilt, never
loaded. Engines run with torch CUDA tensors (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``).

``tensorrt`` is imported only in this module, behind :func:`require_tensorrt`.
Building and running engines has not been executed in this project's CI (no
GPU, no TensorRT there); profiles, cache keys and the import guard are tested.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from framelens import ConfigError

from .decoder import KVPool
from .model import LoadedModel
from .onnx_export import GENAI_CONFIG

__all__ = ["Profile", "TrtDecoder", "attach_tensorrt", "build_engines", "decoder_profiles", "engine_key",
           "require_tensorrt", "vision_profiles"]

log = logging.getLogger("framelens.local")

INSTALL_HINT = ("TensorRT is not installed: on a Jetson it ships with JetPack (python3-libnvinfer); elsewhere "
                "`pip install 'framelens[tensorrt]' --extra-index-url https://pypi.nvidia.com`; or use "
                "local-runtime=torch")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """One optimization profile: ``name -> (min, opt, max)`` shapes."""

    name: str
    shapes: dict[str, tuple[Shape, Shape, Shape]]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "shapes": {k: [list(s) for s in v] for k, v in sorted(self.shapes.items())}}


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a ConfigError that says how to install it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ConfigError(f"local-runtime=tensorrt: {INSTALL_HINT}") from None
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise ConfigError(f"local-runtime=tensorrt needs TensorRT 10 or newer (found {trt.__version__})")
    return trt


def decoder_profiles(config: dict[str, Any], *, max_batch: int, max_context: int, max_prefill: int) -> list[Profile]:
    """The prefill and decode profiles of ``decoder.onnx`` (after Edge-LLM's two-profile layout)."""
    d = config["model"]["decoder"]
    hidden, heads, hd, layers = d["hidden_size"], d["num_key_value_heads"], d["head_size"], d["num_hidden_layers"]
    if max_prefill > max_context or max_batch < 1:
        raise ConfigError("engine build: max-prefill must be at most max-context and max-batch at least 1")

    def build(name: str, s: tuple[int, int, int], past: tuple[int, int, int]) -> Profile:
        b = (1, max_batch, max_batch)
        shapes: dict[str, tuple[Shape, Shape, Shape]] = {
            "inputs_embeds": tuple((b[i], s[i], hidden) for i in range(3)),  # type: ignore[dict-item]
            "attention_mask": tuple((b[i], past[i] + s[i]) for i in range(3)),  # type: ignore[dict-item]
            "position_ids": tuple((b[i], s[i]) for i in range(3)),  # type: ignore[dict-item]
        }
        for layer in range(layers):
            for kind in ("key", "value"):
                shapes[f"past_key_values.{layer}.{kind}"] = tuple(  # type: ignore[assignment]
                    (b[i], heads, past[i], hd) for i in range(3))
        return Profile(name, shapes)

    return [build("prefill", (1, max(1, max_prefill // 2), max_prefill), (0, 0, max_context - max_prefill)),
            build("decode", (1, 1, 1), (1, max_context // 2, max_context - 1))]


def vision_profiles(config: dict[str, Any], *, max_images: int) -> list[Profile]:
    h, w = config["framelens"]["image_size"]
    return [Profile("vision", {"pixel_values": ((1, 3, h, w), (max_images, 3, h, w), (max_images, 3, h, w))})]


def _gpu() -> str:
    if not torch.cuda.is_available():
        return "no-gpu"
    p = torch.cuda.get_device_properties(0)
    return f"{p.name}|sm{p.major}{p.minor}"


def engine_key(onnx_file: Path, trt_version: str, gpu: str, profiles: list[Profile], dtype: str) -> str:
    """The cache key of an engine: what it was built from, with what, for what."""
    h = hashlib.sha256()
    with onnx_file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(json.dumps({"trt": trt_version, "gpu": gpu, "dtype": dtype,
                         "profiles": [p.as_json() for p in profiles]}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def _build_one(trt: Any, onnx_file: Path, plan: Path, profiles: list[Profile], timing: Path) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # accepted (and implied) on TensorRT 11
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"engine build: TensorRT cannot parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    config.builder_optimization_level = 3
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    for prof in profiles:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in prof.shapes.items():
            p.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(p)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(f"engine build: TensorRT could not build {onnx_file} (see its log above)")
    tmp = plan.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan)
    timing.write_bytes(bytes(cache.serialize()))


def build_engines(onnx_dir: Path, out: Path | None = None, *, max_batch: int = 8, max_context: int = 2048,
                  max_prefill: int = 1024, max_images: int = 4,
                  progress: Callable[[str], None] | None = None) -> Path:
    """Build (or reuse from the cache) the vision and decoder engines for the graphs in ``onnx_dir``."""
    trt = require_tensorrt()
    say = progress or (lambda m: log.info("%s", m))
    config = json.loads((onnx_dir / GENAI_CONFIG).read_text())
    out = out or onnx_dir.parent / "trt"
    out.mkdir(parents=True, exist_ok=True)
    gpu = _gpu()
    if gpu == "no-gpu":
        raise ConfigError("engine build: TensorRT builds need an NVIDIA GPU, and torch sees none")
    dtype = config["framelens"]["dtype"]
    manifest: dict[str, Any] = {"tensorrt": trt.__version__, "gpu": gpu, "engines": {}}
    jobs = [("vision", vision_profiles(config, max_images=max_images)),
            ("decoder", decoder_profiles(config, max_batch=max_batch, max_context=max_context,
                                         max_prefill=max_prefill))]
    for name, profiles in jobs:
        onnx_file = onnx_dir / f"{name}.onnx"
        key = engine_key(onnx_file, trt.__version__, gpu, profiles, dtype)
        plan = out / f"{name}-{key}.plan"
        if plan.is_file():
            say(f"{name}: cached engine {plan.name}")
        else:
            say(f"{name}: building with TensorRT {trt.__version__} for {gpu} (minutes)")
            _build_one(trt, onnx_file, plan, profiles, out / "timing.cache")
        manifest["engines"][name] = {"plan": plan.name, "key": key, "profiles": [p.as_json() for p in profiles]}
    (out / "engines.json").write_text(json.dumps(manifest, indent=2))
    return out


_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT64": torch.int64,
           "INT32": torch.int32, "BOOL": torch.bool}


class _Plan:
    """One deserialized engine and its execution context."""

    def __init__(self, trt: Any, path: Path) -> None:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ConfigError(f"local-runtime=tensorrt: {path} was built for another TensorRT version or GPU; "
                              "run `framelens engine build` again")
        self.context = self.engine.create_execution_context()
        self.trt = trt
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(self, inputs: dict[str, torch.Tensor], profile: int = 0) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream()
        self.context.set_optimization_profile_async(profile, stream.cuda_stream)
        for name, t in inputs.items():
            t = t.contiguous()
            inputs[name] = t
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = {}
        for name in self.outputs:
            dtype = _DTYPES[str(self.engine.get_tensor_dtype(name)).split(".")[-1]]
            out[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, out[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return out


class TrtDecoder:
    """The decoder engine with the call signature of :class:`~.decoder.Decoder` (past/present layout)."""

    def __init__(self, plan: _Plan, embed: Callable[[torch.Tensor], torch.Tensor], layers: int) -> None:
        self.plan, self.embed, self.layers = plan, embed, layers

    def __call__(self, embeds: torch.Tensor, positions: torch.Tensor, pool: KVPool, rows: torch.Tensor,
                 read: torch.Tensor, window: int, masks: list[torch.Tensor], last: torch.Tensor) -> torch.Tensor:
        b, s = positions.shape
        valid = rows != pool.scratch
        starts = positions[:, 0]
        past = int(starts.max())
        cols = torch.arange(past + s, device=embeds.device)
        mask = (cols[None] < starts[:, None]).long()
        mask[:, past:] = valid.long()
        feed = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions.long()}
        for layer in range(self.layers):
            feed[f"past_key_values.{layer}.key"] = pool.k[read, layer, :, :past]
            feed[f"past_key_values.{layer}.value"] = pool.v[read, layer, :, :past]
        out = self.plan.run(feed, profile=0 if s > 1 or past == 0 else 1)
        for i in range(b):
            n = int(valid[i].sum())
            slot, start = int(read[i]), int(starts[i])
            for layer in range(self.layers):
                pool.k[slot, layer, :, start:start + n] = out[f"present.{layer}.key"][i, :, past:past + n]
                pool.v[slot, layer, :, start:start + n] = out[f"present.{layer}.value"][i, :, past:past + n]
        logits = out["logits"]
        return logits[torch.arange(b, device=logits.device), last].float()


def attach_tensorrt(model: LoadedModel, engine_dir: Path) -> None:
    """Run ``model``'s vision and decoder on the engines ``framelens engine build`` wrote into ``engine_dir``."""
    trt = require_tensorrt()
    manifest_file = engine_dir / "engines.json"
    if not manifest_file.is_file():
        raise ConfigError(f"local-runtime=tensorrt: {engine_dir} has no engines.json; run `framelens engine build "
                          "ONNX_DIR` first (or set local-engine-dir)")
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("tensorrt") != trt.__version__ or manifest.get("gpu") != _gpu():
        raise ConfigError(f"local-runtime=tensorrt: the engines in {engine_dir} were built with TensorRT "
                          f"{manifest.get('tensorrt')} for {manifest.get('gpu')}, this is TensorRT {trt.__version__} "
                          f"on {_gpu()}; run `framelens engine build` again")
    if model.device.type != "cuda":
        raise ConfigError("local-runtime=tensorrt needs local-device=cuda")
    vision = _Plan(trt, engine_dir / manifest["engines"]["vision"]["plan"])
    decoder = _Plan(trt, engine_dir / manifest["engines"]["decoder"]["plan"])

    def encode(pixel_values: torch.Tensor) -> torch.Tensor:
        return vision.run({"pixel_values": pixel_values.to("cuda", model.dtype)})["image_features"]

    model.vision = encode  # type: ignore[assignment]
    model.decoder = TrtDecoder(decoder, model.decoder.embed, model.spec.layers)  # type: ignore[assignment]
