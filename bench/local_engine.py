"""The local engine against transformers' eager ``generate()``, side by side in one run, on this machine.

A random-weight Llava (CLIP vision + Llama decoder; no download, seeded) is
built in a temp folder at the size given (default: hidden 768, 12 layers, about
100 M parameters, 16 image tokens), then both sides answer the same prompts
(a 640x480 frame plus a one-sentence question), greedy, EOS ignored so every
answer has the same length:

- decode tokens/s at batch 1 (after the first token) and aggregate at batch B
  (B requests at once: the engine batches them continuously; HF gets one
  left-padded ``generate()`` call with the B prompts);
- vision-encoder time per image (the same transformers tower on both sides);
- time to first token (vision + prefill + one token);
- frame -> 32-token caption (chat template, image preprocessing and generation).

Prints one JSON line: ``{"engine": {...}, "hf_generate": {...}, "ratio": {...}}``
where ratios are engine / HF for speeds and HF / engine for times (> 1 = the engine is faster).

    .venv/bin/python bench/local_engine.py [--hidden 768] [--layers 12] [--batch 8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from framelens.plugins.vlm.local.engine import EngineAPI
from framelens.plugins.vlm.local.loading import check_model_dir
from framelens.plugins.vlm.local.measure import _messages, frame, measure_engine
from framelens.plugins.vlm.local.model import LoadedModel
from framelens.plugins.vlm.local.tiny import build_tiny_model


def measure_hf(path: Path, *, tokens: int, batch: int, repeats: int) -> dict[str, Any]:
    import transformers
    from PIL import Image

    model = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    proc = transformers.AutoProcessor.from_pretrained(path)
    proc.tokenizer.padding_side = "left"

    def inputs(seeds: list[int]) -> Any:
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
                 "Describe what is in this picture in one short sentence."}]}]
        text = proc.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        images = [Image.fromarray(frame(s)[:, :, ::-1]) for s in seeds]
        return proc(text=[text] * len(seeds), images=images, return_tensors="pt", padding=True)

    def gen(inp: Any, n: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(**inp, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - t0

    gen(inputs([0]), 4)  # warm-up
    first, full = [], []
    for i in range(repeats):
        inp = inputs([1 + i])
        first.append(gen(inp, 1))
        full.append(gen(inp, tokens))
    ttft = statistics.median(first)
    decode = (tokens - 1) / (statistics.median(full) - ttft)
    wall = gen(inputs(list(range(100, 100 + batch))), tokens)
    px = inputs([0])["pixel_values"]
    vision = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            model.model.get_image_features(pixel_values=px, vision_feature_layer=model.config.vision_feature_layer,
                                           vision_feature_select_strategy="default")
        vision.append(time.perf_counter() - t0)
    captions = []
    for i in range(repeats):
        t0 = time.perf_counter()
        gen(inputs([200 + i]), 32)
        captions.append(time.perf_counter() - t0)
    return {"decode_tok_s_b1": round(decode, 1), f"decode_tok_s_b{batch}_total": round(batch * tokens / wall, 1),
            "vision_s_per_image": round(statistics.median(vision), 5), "first_token_s": round(ttft, 4),
            "frame_to_32_tokens_s": round(statistics.median(captions), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model("llava", Path(tmp) / "m", layers=args.layers, hidden=args.hidden)
        model = LoadedModel(check_model_dir(path), torch.device("cpu"), torch.float32)
        engine = EngineAPI(model, slots=args.batch, capacity=512, prefix_slots=0)
        try:
            ours = measure_engine(engine, tokens=args.tokens, batch=args.batch, repeats=args.repeats)
        finally:
            engine.close()
        params = model.parameters
        del model, engine
        hf = measure_hf(path, tokens=args.tokens, batch=args.batch, repeats=args.repeats)
    speed = [k for k in hf if k.startswith("decode")]
    ratio = {k: round(ours[k] / hf[k], 2) for k in speed}
    ratio.update({k: round(hf[k] / ours[k], 2) for k in hf if k not in speed and ours[k]})
    print(json.dumps({"model": {"family": "llava", "hidden": args.hidden, "layers": args.layers,
                                "parameters": params, "prompt_tokens": ours["prompt_tokens"],
                                "image_tokens": ours["image_tokens"], "dtype": "float32", "device": "cpu",
                                "threads": torch.get_num_threads()},
                      "engine": {k: v for k, v in ours.items() if k not in ("prompt_tokens", "image_tokens")},
                      "hf_generate": hf, "ratio": ratio}))


if __name__ == "__main__":
    main()
