"""The local engine against transformers' eager ``generate()``, side by side in one run, on CPU or a CUDA GPU.

Models (random weights, seeded, no download; decode speed does not depend on the values):

- ``--preset tiny`` (default): a Llava (CLIP vision + Llama decoder) at ``--hidden``/``--layers``
  (default hidden 768, 12 layers, about 100 M parameters, 16 image tokens), built in a temp folder;
- ``--preset gemma3-4b``: Gemma-3-4B's shapes (text: hidden 2560, 34 layers, 8 heads, 4 KV heads, head_dim 256,
  MLP 10240, vocabulary 262,144, tied head, sliding window 1024 with every 6th layer global; vision:
  SigLIP-so400m at 896 px, 27 layers, 4,096 patches pooled to 256 image tokens), built straight on the
  device in ``--dtype``. Only config, tokenizer and processor go to disk: the engine takes the very tensors
  of the transformers model (one copy of the weights, no 8 GB safetensors file);
- ``--preset gemma3-mini``: the same structure small enough for a CPU (hidden 256, 6 layers, a 2-layer SigLIP
  at 224 px, still 256 image tokens and the full vocabulary), to try the script without a GPU;
- ``--preset qwen2.5-vl-3b``: Qwen2.5-VL-3B's shapes (text: hidden 2048, 36 layers, 16 heads, 2 KV heads,
  MLP 11008, vocabulary 151,936, tied head, mRoPE; vision: 32 blocks of 1280, windowed with 4 full-attention
  blocks, 2x2 patch merger), and ``qwen2.5-vl-mini`` its CPU-sized sibling, built the same way.

Both sides answer the same prompts (a 640x480 frame plus a question of about 40 tokens for the Gemma presets),
greedy, EOS ignored so every answer has the same length:

- decode tokens/s at batch 1 (after the first token) and aggregate at batch B
  (B requests at once: the engine batches them continuously; HF gets one
  left-padded ``generate()`` call with the B prompts);
- vision-encoder time per image (the same transformers tower on both sides);
- time to first token (vision + prefill + one token);
- frame -> 32-token caption (chat template, image preprocessing and generation);
- B cameras at once, each a 32-token caption of a new frame: captions per second per camera;
- ``--rules`` yes/no rules on one frame through the ``choices`` path (engine only: HF has no such call);
- the decode step alone (``step_ms``: no sampling, no text) at batch 1 and B;
- the memory-bandwidth limit of batch-1 decoding: decoder weight bytes / device-to-device copy bandwidth
  (read + write bytes of a ``--copy-gb`` buffer copy, measured in the same run).

On CUDA the engine runs twice, side by side: as it ships (decode steps and prefills replayed as CUDA graphs)
and with ``local-cuda-graphs=false`` (``engine_eager``: the same work launched kernel by kernel), and ``--profile``
adds a torch.profiler breakdown of one eager batch-1 step (kernels per step, their summed device time, the
costliest kernels).

Prints one JSON line: ``{"model", "machine", "limit", "engine", "engine_eager", "hf_generate", "ratio",
"ratio_to_eager", "step_ms", "profile", "fraction_of_limit"}`` where ratios are engine / other for speeds
and other / engine for times (> 1 = the engine is faster).

    .venv/bin/python bench/local_engine.py [--preset tiny|gemma3-mini|gemma3-4b] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--hidden 768] [--layers 12] [--batch 8] [--tokens 64] [--repeats 3]
        [--capacity 1024] [--rules 50] [--profile]
    (presets: tiny, gemma3-4b, gemma3-mini, qwen2.5-vl-3b, qwen2.5-vl-mini)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from framelens.plugins.vlm.local import model as model_module
from framelens.plugins.vlm.local import vision as vision_module
from framelens.plugins.vlm.local.engine import EngineAPI
from framelens.plugins.vlm.local.loading import ModelFiles, _normalise, check_model_dir
from framelens.plugins.vlm.local.measure import DEFAULT_TEXT, frame, measure_engine
from framelens.plugins.vlm.local.model import LoadedModel
from framelens.plugins.vlm.local.tiny import build_tiny_model

__all__ = ["GEMMA3_SHAPES", "QWEN25VL_SHAPES", "HFSide", "build_gemma3", "build_qwen25vl", "copy_bandwidth",
           "shared_weights", "sync"]

# about 40 text tokens with the tiny tokenizer (Gemma 3's real prompts are of that order)
GEMMA_TEXT = "You watch a security camera. Describe the people and vehicles in this frame in one short sentence."

GEMMA3_SHAPES: dict[str, dict[str, Any]] = {
    "gemma3-4b": {"text": dict(hidden_size=2560, num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4,
                               head_dim=256, intermediate_size=10240, query_pre_attn_scalar=256),
                  "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                 num_attention_heads=16, image_size=896, patch_size=14)},
    "gemma3-mini": {"text": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                                 head_dim=64, intermediate_size=1024, query_pre_attn_scalar=64),
                    "vision": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, image_size=224, patch_size=14)},
}


def sync(device: torch.device) -> None:
    """Wait for the device, so a host clock times the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class HFSide:
    """transformers' eager ``generate()`` (no compile, its dynamic cache) on the same weights and prompts."""

    def __init__(self, model: Any, proc: Any, device: torch.device, text: str = DEFAULT_TEXT) -> None:
        self.model, self.proc, self.device, self.text = model.eval(), proc, device, text
        self.proc.tokenizer.padding_side = "left"

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype, text: str = DEFAULT_TEXT) -> HFSide:
        import transformers

        hf: Any = transformers
        from framelens.plugins.vlm.local.qwen import load_processor

        model = hf.AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device)
        # load_processor: AutoProcessor, or Qwen2.5-VL's image-only processor where its video processor cannot load
        return cls(model, load_processor(path, model.config.architectures or []), device, text)

    def batch(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> Any:
        """Processor inputs of one user turn per row (a BGR image then text), left-padded, on the device."""
        from PIL import Image

        rows = [self.proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {
            "type": "text", "text": t}]}], add_generation_prompt=True, tokenize=False) for t in texts]
        pil = [Image.fromarray(np.ascontiguousarray(i[:, :, ::-1])) for i in images]
        nested = type(self.proc).__name__.startswith("Gemma3")  # Gemma 3 wants one image list per prompt
        inp = self.proc(text=rows, images=[[p] for p in pil] if nested else pil, return_tensors="pt", padding=True)
        return inp.to(self.device)

    def inputs(self, seeds: list[int]) -> Any:
        return self.batch([frame(s) for s in seeds], [self.text] * len(seeds))

    def gen(self, inp: Any, n: int) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.generate(**inp, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        sync(self.device)
        return time.perf_counter() - t0

    def measure(self, *, tokens: int, batch: int, seed: int) -> dict[str, float]:
        """One round of every figure."""
        inp = self.inputs([seed])
        ttft = self.gen(inp, 1)
        full = self.gen(inp, tokens)
        wall = self.gen(self.inputs(list(range(100 + seed, 100 + seed + batch))), tokens)
        px = inp["pixel_values"]
        kw = ({"vision_feature_layer": self.model.config.vision_feature_layer,
               "vision_feature_select_strategy": "default"} if hasattr(self.model.config, "vision_feature_layer")
              else {})
        if "image_grid_thw" in inp:  # Qwen2.5-VL: the patches need their grid
            kw["image_grid_thw"] = inp["image_grid_thw"]
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.model.get_image_features(pixel_values=px, **kw)
        sync(self.device)
        vision = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.gen(self.inputs([200 + seed]), 32)
        caption = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.gen(self.inputs(list(range(400 + seed, 400 + seed + batch))), 32)
        cameras = time.perf_counter() - t0
        return {"decode_tok_s_b1": (tokens - 1) / max(full - ttft, 1e-9),
                f"decode_tok_s_b{batch}_total": batch * tokens / wall, "vision_s_per_image": vision,
                "first_token_s": ttft, "frame_to_32_tokens_s": caption,
                f"captions_per_s_per_camera_b{batch}": 1 / cameras}


def build_gemma3(preset: str, directory: Path, device: torch.device, dtype: torch.dtype) -> tuple[Path, Any]:
    """A random Gemma 3 of ``preset``'s shapes: its folder (config, tokenizer, processor; no weights) and the
    transformers model, built on ``device`` in ``dtype``."""
    import transformers

    T: Any = transformers
    tiny = build_tiny_model("gemma3", directory / "tokenizer-source", layers=2, hidden=64)
    tok = T.AutoTokenizer.from_pretrained(tiny)
    tiny_cfg = json.loads((tiny / "config.json").read_text())
    shapes = GEMMA3_SHAPES[preset]
    text = T.Gemma3TextConfig(vocab_size=262144, sliding_window=1024, max_position_embeddings=131072,
                              rms_norm_eps=1e-6, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id, **shapes["text"],
                              layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                           for i in range(shapes["text"]["num_hidden_layers"])],
                              rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                  "rope_theta": 1e6},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    vision = T.SiglipVisionConfig(vision_use_head=False, layer_norm_eps=1e-6, **shapes["vision"])
    cfg = T.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256,
                         boi_token_index=tiny_cfg["boi_token_index"], eoi_token_index=tiny_cfg["eoi_token_index"],
                         image_token_index=tiny_cfg["image_token_index"], tie_word_embeddings=True)
    cfg.architectures = ["Gemma3ForConditionalGeneration"]
    torch.manual_seed(0)
    with torch.device(device):
        model = T.Gemma3ForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    out = directory / preset
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    size = shapes["vision"]["image_size"]
    proc = T.Gemma3Processor(image_processor=T.Gemma3ImageProcessor(size={"height": size, "width": size}),
                             tokenizer=tok, image_seq_length=256, chat_template=tok.chat_template)
    proc.save_pretrained(out)
    return out, model


QWEN25VL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-vl-3b": {"text": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16,
                                   num_key_value_heads=2, intermediate_size=11008), "mrope": [16, 24, 24],
                      "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                     fullatt_block_indexes=[7, 15, 23, 31])},
    "qwen2.5-vl-mini": {"text": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                                     num_key_value_heads=2, intermediate_size=1024), "mrope": [4, 6, 6],
                        "vision": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4,
                                       fullatt_block_indexes=[1])},
}


def build_qwen25vl(preset: str, directory: Path, device: torch.device, dtype: torch.dtype) -> tuple[Path, Any]:
    """A random Qwen2.5-VL of ``preset``'s shapes (vocabulary 151,936, tied head, mRoPE, 14 px
    patches merged 2x2, windowed attention), built on ``device`` in ``dtype``; frames resized to about 448x448 px,
    aspect kept (234 image tokens for a 640x480 frame), as ``local-max-pixels`` does by default."""
    import transformers

    from framelens.plugins.vlm.local.qwen import load_processor

    T: Any = transformers
    tiny = build_tiny_model("qwen2_5_vl", directory / "tokenizer-source", layers=2, hidden=64)
    tiny_cfg = json.loads((tiny / "config.json").read_text())
    shapes = QWEN25VL_SHAPES[preset]
    ids = {k: tiny_cfg["text_config"][k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    text = dict(vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "mrope_section": shapes["mrope"], "rope_theta": 1e6},
                **shapes["text"], **ids)
    vision = dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  out_hidden_size=shapes["text"]["hidden_size"], tokens_per_second=2, **shapes["vision"])
    cfg = T.Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=True,
                             **{k: tiny_cfg[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                         "vision_end_token_id")}, **ids)
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    torch.manual_seed(0)
    with torch.device(device):
        model = T.Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype).eval()
    out = directory / preset
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    proc = load_processor(tiny, ["Qwen2_5_VLForConditionalGeneration"])
    proc.image_processor.min_pixels = proc.image_processor.max_pixels = 448 * 448
    proc.save_pretrained(out)
    return out, model


@contextlib.contextmanager
def shared_weights(hf_model: Any) -> Iterator[None]:
    """While open, the engine's loader takes its tensors from ``hf_model`` instead of safetensors files (the same
    storage: ``.to()`` to the same device and dtype is a no-op), so both sides run literally the same weights."""
    state = {_normalise(k): v for k, v in hf_model.state_dict().items()}

    def read(files: ModelFiles, prefix: str, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                for k, v in state.items() if k.startswith(prefix)}

    with mock.patch.object(model_module, "read_weights", read), mock.patch.object(vision_module, "read_weights", read):
        yield


def copy_bandwidth(device: torch.device, gigabytes: float) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written), best of 10 copies."""
    n = int(gigabytes * 1e9) // 2
    a = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    b = torch.empty_like(a)
    b.copy_(a)
    best = float("inf")
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    del a, b
    return 2 * n * 2 / best


def _weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of distinct tensors (a tied head is read once per step, so it counts once)."""
    seen: dict[int, int] = {}
    for p in module.parameters():
        seen[p.data_ptr()] = max(seen.get(p.data_ptr(), 0), p.numel() * p.element_size())
    return sum(seen.values())


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 1 if k.startswith("decode_") else 5)
            for k in rounds[0]}


def step_ms(engine: EngineAPI, batch: int, position: int, steps: int = 30) -> float:
    """Milliseconds of one decode step alone (no sampling, no text) at ``batch`` rows writing at ``position``:
    the engine's step path as it runs (CUDA graph replay, or eager with local-cuda-graphs off). Call it while
    the engine is idle; it writes keys into slots 0..batch-1, which no request holds then."""
    dev = engine.model.device
    args = ([1] * batch, [position] * batch, list(range(batch)))
    for _ in range(3):
        engine.decode_graphs.step(*args)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.decode_graphs.step(*args)
    sync(dev)
    return round((time.perf_counter() - t0) / steps * 1e3, 3)


def kernel_profile(engine: EngineAPI, position: int, steps: int = 5, top: int = 12) -> dict[str, Any]:
    """Where a batch-1 eager decode step spends device time: kernels per step, their summed time per step (what
    a graph replay costs at best), and the costliest kernels (torch.profiler over ``steps`` eager steps)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    graphs_on = engine.decode_graphs.graphs_on
    engine.decode_graphs.graphs_on = False
    try:
        args = ([1], [position], [0])
        engine.decode_graphs.step(*args)
        sync(engine.model.device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                engine.decode_graphs.step(*args)
            sync(engine.model.device)
    finally:
        engine.decode_graphs.graphs_on = graphs_on
    rows = []
    for e in prof.key_averages():
        us = float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0) or 0.0)
        if getattr(e, "device_type", None) == DeviceType.CUDA and us > 0:
            rows.append((us, int(e.count), e.key))
    rows.sort(reverse=True)
    try:  # the full table goes to stderr (kept in the run's log) whatever the rows above found
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25), file=sys.stderr, flush=True)
    except Exception as exc:
        print(f"profile table: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    total = sum(us for us, _, _ in rows)
    return {"kernels_per_step": round(sum(c for _, c, _ in rows) / steps, 1),
            "kernel_ms_per_step": round(total / steps / 1e3, 3),
            "top": [{"kernel": k[:90], "ms_per_step": round(us / steps / 1e3, 4), "calls_per_step": c / steps,
                     "share": round(us / total, 3)} for us, c, k in rows[:top]]}


def _machine(device: torch.device) -> dict[str, Any]:
    import transformers

    out: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   capability=f"{p.major}.{p.minor}")
    else:
        out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=("tiny", *GEMMA3_SHAPES, *QWEN25VL_SHAPES), default="tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--hidden", type=int, default=768, help="tiny preset only")
    ap.add_argument("--layers", type=int, default=12, help="tiny preset only")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--copy-gb", type=float, default=0.0, help="copy buffer for the bandwidth limit "
                    "(default: 4 on CUDA, 0.5 on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--capacity", type=int, default=1024, help="KV tokens per slot")
    ap.add_argument("--rules", type=int, default=50, help="yes/no rules on one frame through choices (0: skip)")
    ap.add_argument("--profile", action="store_true", help="CUDA: kernel profile of one eager batch-1 step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        if args.preset == "tiny":
            text = DEFAULT_TEXT
            path = build_tiny_model("llava", Path(tmp) / "m", layers=args.layers, hidden=args.hidden)
            model = LoadedModel(check_model_dir(path), device, dtype)
            hf_side = HFSide.load(path, device, dtype, text)
        else:
            text = GEMMA_TEXT
            qwen = args.preset in QWEN25VL_SHAPES
            build = build_qwen25vl if qwen else build_gemma3
            path, hf_model = build(args.preset, Path(tmp), device, dtype)
            with shared_weights(hf_model):
                config = json.loads((path / "config.json").read_text())
                family = "qwen2_5_vl" if qwen else "gemma3"
                model = LoadedModel(ModelFiles(path, args.preset, config, family, ()), device, dtype)
            from framelens.plugins.vlm.local.qwen import load_processor

            hf_side = HFSide(hf_model, load_processor(path, config.get("architectures") or []), device, text)
        wbytes = _weight_bytes(model.decoder)
        bandwidth = copy_bandwidth(device, args.copy_gb or (4.0 if device.type == "cuda" else 0.5))
        # progress on stderr, so a run cut short by a time limit still shows what it measured
        print(json.dumps({"weight_bytes": wbytes, "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1)}),
              file=sys.stderr, flush=True)
        engine = EngineAPI(model, slots=args.batch, capacity=args.capacity, prefix_slots=0)
        # on CUDA the same engine with its step launched eagerly (local-cuda-graphs=false): the plain path
        eager = (EngineAPI(model, slots=args.batch, capacity=args.capacity, prefix_slots=0, fixed_shapes=True,
                           cuda_graphs=False) if device.type == "cuda" else None)
        hf_side.gen(hf_side.inputs([0]), 4)  # warm-up
        ours_rounds, eager_rounds, hf_rounds = [], [], []
        steps: dict[str, Any] = {}
        profile_out: dict[str, Any] = {}
        kw = {"tokens": args.tokens, "batch": args.batch, "repeats": 1, "text": text, "rules": args.rules}
        try:
            # alternate the sides round by round, so load on a shared machine hits them alike
            for r in range(args.repeats):
                ours_rounds.append(measure_engine(engine, seed=1000 * (r + 1), **kw))
                if eager is not None:
                    eager_rounds.append(measure_engine(eager, seed=1000 * (r + 1) + 500, **kw))
                hf_rounds.append(hf_side.measure(tokens=args.tokens, batch=args.batch, seed=10 * r + 1))
                print(json.dumps({"round": r, "engine": ours_rounds[-1], "engine_eager": eager_rounds[-1:],
                                  "hf_generate": hf_rounds[-1]}), file=sys.stderr, flush=True)
            at = ours_rounds[0]["prompt_tokens"] + args.tokens // 2  # a position mid-answer
            for name, e in (("engine", engine), ("engine_eager", eager)):
                if e is not None:
                    steps[name] = {f"b{b}": step_ms(e, b, at) for b in sorted({1, args.batch})}
            steps["graphs"] = dict(engine.decode_graphs.stats)
            steps["prefill_graphs"] = dict(engine.prefill_graphs.stats)
            print(json.dumps({"step_ms": steps}), file=sys.stderr, flush=True)
            if args.profile and device.type == "cuda":
                try:
                    profile_out = kernel_profile(engine, at)
                except Exception as exc:  # the profile explains the figures; it must not cost them
                    profile_out = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps({"profile": profile_out}), file=sys.stderr, flush=True)
        finally:
            engine.close()
            if eager is not None:
                eager.close()

        def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
            meta = ("prompt_tokens", "image_tokens")
            return {**_median([{k: v for k, v in o.items() if k not in meta} for o in rounds]),
                    **{k: rounds[0][k] for k in meta}}

        ours = summary(ours_rounds)
        plain = summary(eager_rounds) if eager_rounds else None
        hf = _median(hf_rounds)
    speed = [k for k in hf if k.startswith(("decode", "captions"))]

    def ratios(base: dict[str, Any]) -> dict[str, float]:
        out = {k: round(ours[k] / base[k], 2) for k in speed if base.get(k)}
        out.update({k: round(base[k] / ours[k], 2) for k in base
                    if k in ours and k not in speed and k not in ("prompt_tokens", "image_tokens") and ours[k]})
        return out

    ratio = ratios(hf)
    limit_b1 = bandwidth / wbytes
    b_key = f"decode_tok_s_b{args.batch}_total"
    fraction = {"engine_b1": round(ours["decode_tok_s_b1"] / limit_b1, 3),
                "step_b1": round(1e3 / steps["engine"]["b1"] / limit_b1, 3),
                "hf_b1": round(hf["decode_tok_s_b1"] / limit_b1, 3),
                # batch B reads the weights once per step for B tokens (KV reads left out)
                f"engine_b{args.batch}": round(ours[b_key] / (args.batch * limit_b1), 3),
                f"hf_b{args.batch}": round(hf[b_key] / (args.batch * limit_b1), 3)}
    print(json.dumps({"model": {"preset": args.preset, "parameters": model.parameters,
                                "decoder_weight_bytes": wbytes, "prompt_tokens": ours["prompt_tokens"],
                                "image_tokens": ours["image_tokens"], "dtype": args.dtype, "device": args.device,
                                "tokens": args.tokens, "batch": args.batch, "repeats": args.repeats},
                      "machine": _machine(device),
                      "limit": {"copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
                                "ms_per_token_b1": round(1e3 / limit_b1, 3), "tok_s_b1": round(limit_b1, 1)},
                      "engine": {k: v for k, v in ours.items() if k not in ("prompt_tokens", "image_tokens")},
                      "engine_eager": ({k: v for k, v in plain.items() if k not in ("prompt_tokens", "image_tokens")}
                                       if plain else None),
                      "hf_generate": hf, "ratio": ratio, "ratio_to_eager": ratios(plain) if plain else None,
                      "step_ms": steps, "profile": profile_out or None, "fraction_of_limit": fraction}))


if __name__ == "__main__":
    main()
