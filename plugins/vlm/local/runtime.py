"""Loading an engine for a set of options: model files, device, dtype, runtime, KV size.

``load_engine`` does everything that can fail before the engine thread starts,
and raises a :class:`~framelens.ConfigError` naming the problem, so a bad model
or a full device is an exit-2 error at start and nothing is left half loaded.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch

from framelens import ConfigError

from .engine import EngineAPI
from .loading import resolve_model
from .model import LoadedModel, pick_device
from .options import LocalOptions

__all__ = ["available_memory", "load_engine"]

log = logging.getLogger("framelens.local")


def available_memory(device: torch.device) -> int:
    """Bytes free for the KV cache on ``device`` (CUDA: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def load_engine(options: LocalOptions) -> EngineAPI:
    """Resolve, check and load the model, size the KV pool and start the engine thread."""
    runtime = "torch" if options.runtime == "auto" else options.runtime
    if runtime == "tensorrt":
        from .tensorrt import require_tensorrt

        require_tensorrt()
    files = resolve_model(options.model, options.revision)
    device, dtype = pick_device(options.device, options.dtype)
    onnx_dir = Path(options.onnx_dir) if options.onnx_dir else files.path / "onnx"
    if options.runtime == "auto" and device.type == "cpu" and dtype == torch.float32 \
            and (onnx_dir / "genai_config.json").is_file():
        runtime = "onnx"  # exported graphs next to the model: ONNX Runtime is the faster CPU path
    if runtime == "onnx" and device.type != "cpu":
        log.warning("local-runtime=onnx runs on the CPU (onnxruntime's CPU provider)")
    try:
        model = LoadedModel(files, device, dtype, max_images=options.max_images, max_pixels=options.max_pixels)
        if runtime == "onnx":
            from .onnx_runner import attach_onnx

            attach_onnx(model, onnx_dir)
        elif runtime == "tensorrt":
            from .tensorrt import attach_tensorrt

            attach_tensorrt(model, Path(options.engine_dir) if options.engine_dir else files.path / "trt")
    except torch.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        raise ConfigError(f"local-model={options.model}: the weights do not fit in {device} memory; use a smaller "
                          "model, local-dtype=float16, or local-device=cpu") from None
    spec = model.spec
    capacity = min(options.max_context, spec.max_positions)
    slots = options.max_batch
    per_token = spec.kv_bytes_per_token(dtype)
    budget = int(available_memory(device) * 0.8)
    total_slots = slots + options.prefix_cache + 1
    fits = budget // max(1, per_token * total_slots)
    if fits < capacity:
        if fits < 256:
            raise ConfigError(f"local-model={options.model}: the KV cache for {slots} slots does not fit in {device} "
                              f"memory ({budget / 2**30:.1f} GiB free); lower local-max-batch or local-prefix-cache")
        log.warning("KV cache sized to %d tokens per slot (of local-max-context=%d) to fit free %s memory",
                    fits, capacity, device.type)
        capacity = int(fits)
    try:
        engine = EngineAPI(model, slots=slots, capacity=capacity, prefix_slots=options.prefix_cache,
                           cuda_graphs=options.cuda_graphs and runtime == "torch")  # ONNX/TensorRT: their own
    except torch.OutOfMemoryError:
        del model
        gc.collect()
        torch.cuda.empty_cache()
        raise ConfigError(f"local-model={options.model}: the KV cache does not fit in {device} memory; lower "
                          "local-max-context or local-max-batch") from None
    if runtime != "torch":
        engine.runtime = runtime
    log.info("local engine ready: %s", engine.describe())
    return engine
