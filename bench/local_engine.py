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
from framelens.plugins.vlm.local.measure import frame, measure_engine
from framelens.plugins.vlm.local.model import LoadedModel
from framelens.plugins.vlm.local.tiny import build_tiny_model


class HFSide:
    """transformers' eager ``generate()`` on the same checkpoint and prompts."""

    def __init__(self, path: Path) -> None:
        import transformers

        self.model = transformers.AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
        self.proc = transformers.AutoProcessor.from_pretrained(path)
        self.proc.tokenizer.padding_side = "left"

    def inputs(self, seeds: list[int]) -> Any:
        from PIL import Image

        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text":
                 "Describe what is in this picture in one short sentence."}]}]
        text = self.proc.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        images = [Image.fromarray(frame(s)[:, :, ::-1]) for s in seeds]
        return self.proc(text=[text] * len(seeds), images=images, return_tensors="pt", padding=True)

    def gen(self, inp: Any, n: int) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.generate(**inp, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - t0

    def measure(self, *, tokens: int, batch: int, seed: int) -> dict[str, float]:
        """One round of every figure."""
        inp = self.inputs([seed])
        ttft = self.gen(inp, 1)
        full = self.gen(inp, tokens)
        wall = self.gen(self.inputs(list(range(100 + seed, 100 + seed + batch))), tokens)
        px = inp["pixel_values"]
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.model.get_image_features(
                pixel_values=px, vision_feature_layer=self.model.config.vision_feature_layer,
                vision_feature_select_strategy="default")
        vision = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.gen(self.inputs([200 + seed]), 32)
        caption = time.perf_counter() - t0
        return {"decode_tok_s_b1": (tokens - 1) / max(full - ttft, 1e-9),
                f"decode_tok_s_b{batch}_total": batch * tokens / wall, "vision_s_per_image": vision,
                "first_token_s": ttft, "frame_to_32_tokens_s": caption}


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rounds), 1 if k.startswith("decode_") else 5)
            for k in rounds[0]}


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
        hf_side = HFSide(path)
        hf_side.gen(hf_side.inputs([0]), 4)  # warm-up
        ours_rounds, hf_rounds = [], []
        try:
            # alternate the two sides round by round, so load on this shared machine hits both alike
            for r in range(args.repeats):
                ours_rounds.append(measure_engine(engine, tokens=args.tokens, batch=args.batch, repeats=1,
                                                  seed=1000 * (r + 1)))
                hf_rounds.append(hf_side.measure(tokens=args.tokens, batch=args.batch, seed=10 * r + 1))
        finally:
            engine.close()
        params = model.parameters
        ours = {**_median([{k: v for k, v in o.items() if k not in ("prompt_tokens", "image_tokens")}
                           for o in ours_rounds]), **{k: ours_rounds[0][k] for k in ("prompt_tokens", "image_tokens")}}
        hf = _median(hf_rounds)
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
