"""``framelens engine info|export|build|bench``: the local engine's command line.

Added through the ``register_commands`` hook. The handlers import torch and
transformers only when they run, so building the command line stays cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from framelens import ConfigError

from .options import DEFAULT_MODEL

__all__ = ["add_commands"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parameters(weights: tuple[Path, ...]) -> int:
    from math import prod

    from safetensors import safe_open

    total = 0
    for file in weights:
        with safe_open(str(file), "pt") as f:
            total += sum(prod(f.get_slice(n).get_shape()) for n in f.keys())
    return total


def _info(args: argparse.Namespace) -> int:
    from .decoder import DecoderSpec
    from .loading import resolve_model
    from .model import pick_device

    files = resolve_model(args.model)
    tied = bool(files.config.get("tie_word_embeddings", files.text_config.get("tie_word_embeddings", False)))
    spec = DecoderSpec.from_config(files.text_config, tied=tied)
    device, dtype = pick_device(args.device, "auto")
    size = sum(f.stat().st_size for f in files.weights)
    stored = str(files.config.get("torch_dtype") or files.config.get("dtype") or files.text_config.get("dtype")
                 or "unknown")
    per_token = spec.kv_bytes_per_token(dtype)
    params = _parameters(files.weights)
    weights = params * dtype.itemsize
    kv = per_token * args.max_context * (args.max_batch + 1)
    runtimes = ["torch"] + (["onnx"] if files.family == "llava" else []) + (
        ["tensorrt"] if files.family == "llava" else [])
    info = {
        "model": files.name, "path": str(files.path), "family": files.family, "decoder": files.text_type,
        "architectures": files.config.get("architectures"), "parameters": params,
        "weights_bytes_on_disk": size, "stored_dtype": stored,
        "device": device.type, "dtype": str(dtype).removeprefix("torch."), "layers": spec.layers,
        "hidden": spec.hidden, "heads": spec.heads, "kv_heads": spec.kv_heads, "vocab": spec.vocab,
        "max_positions": spec.max_positions, "kv_bytes_per_token": per_token,
        "memory_estimate_bytes": {"weights": weights, "kv_cache": kv, "total": weights + kv},
        "runtimes": runtimes,
    }
    print(json.dumps(info, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .onnx_export import export_onnx

    path = export_onnx(args.model, Path(args.out), progress=_say)
    print(path)
    return 0


def _build(args: argparse.Namespace) -> int:
    from .tensorrt import build_engines

    out = build_engines(Path(args.onnx_dir), Path(args.out) if args.out else None, max_batch=args.max_batch,
                        max_context=args.max_context, max_prefill=args.max_prefill, progress=_say)
    print(out)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .measure import measure_engine
    from .options import LocalOptions
    from .runtime import load_engine

    try:
        options = LocalOptions(model=args.model, runtime=args.runtime, device=args.device,
                               max_context=args.max_context, max_batch=args.batch, prefix_cache=0)
    except ValueError as exc:
        raise ConfigError(f"engine bench: {exc}") from None
    engine = load_engine(options)
    try:
        _say(f"measuring {engine.describe()}")
        result: dict[str, Any] = {"model": args.model, "runtime": engine.runtime, **measure_engine(
            engine, tokens=args.tokens, batch=args.batch)}
    finally:
        engine.close()
    print(json.dumps(result))
    return 0


def add_commands(cli: Any) -> None:
    """Add ``engine`` and its subcommands to the ``framelens`` command line."""
    engine = cli.add_parser("engine", help="the local VLM engine: inspect, export to ONNX, build TensorRT, measure",
                            description="Tools for the local backend's engine (-p local, --backend local).")
    sub = engine.add_subparsers(dest="engine_command", metavar="COMMAND", required=True)
    p = sub.add_parser("info", help="family, parameters, dtype, memory estimate and runtimes of a model")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="Hugging Face id or local folder")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--max-context", type=int, default=2048)
    p.add_argument("--max-batch", type=int, default=8)
    p.set_defaults(handler=_info)
    p = sub.add_parser("export", help="write vision/embedding/decoder ONNX graphs and genai_config.json")
    p.add_argument("model", help="Hugging Face id or local folder")
    p.add_argument("out", help="output folder (local-onnx-dir; default looked up: MODEL/onnx)")
    p.set_defaults(handler=_export)
    p = sub.add_parser("build", help="build TensorRT engines from an exported folder (needs TensorRT and a GPU)")
    p.add_argument("onnx_dir", help="folder written by `framelens engine export`")
    p.add_argument("--out", help="engine folder (default: next to ONNX_DIR, named trt)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-context", type=int, default=2048)
    p.add_argument("--max-prefill", type=int, default=1024)
    p.set_defaults(handler=_build)
    p = sub.add_parser("bench", help="prompt, first-token and decode timings of a model on this machine")
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="Hugging Face id or local folder")
    p.add_argument("--runtime", choices=("auto", "torch", "onnx", "tensorrt"), default="auto")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-context", type=int, default=1024)
    p.set_defaults(handler=_bench)
