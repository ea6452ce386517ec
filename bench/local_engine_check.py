"""Correctness of the local engine on a device: its greedy tokens against transformers' ``generate()`` there.

For each tiny family of :mod:`framelens.plugins.vlm.local.tiny` (Llava with a
Llama and a Qwen2 decoder, Gemma 3), and optionally a Gemma 3 preset of
``bench/local_engine.py`` (the engine on the very tensors of the transformers
model), in each ``--dtypes``: three prompts of different lengths (an image and
a question each), answered one at a time and then as one batch (the engine
batches them continuously; HF gets one left-padded call), greedy, up to EOS or
``--tokens``. The engine runs with the step shapes it uses on CUDA (bucketed key
windows and batches of powers of two), also on CPU. On CUDA each case also
compares the batch's tokens with the CUDA graphs against the same step launched
eagerly (``"batch": "graphs-vs-eager"``; equal only if graphs were replayed).

Prints one JSON line per case: tokens equal or not, and the agreement length
(the common prefix of the two answers), the max |logit difference| over the
steps both sides took while they agreed at batch 1. Exits 1 if a float32 case differs: float32 must agree
exactly; bfloat16 is reported, since rounding may flip a near tie late in an answer.

    .venv/bin/python bench/local_engine_check.py [--device cuda] [--dtypes float32,bfloat16] [--preset gemma3-mini]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from local_engine import GEMMA3_SHAPES, HFSide, build_gemma3, shared_weights

from framelens import ChatMessage, ImagePart, TextPart
from framelens.plugins.vlm.local.engine import EngineAPI
from framelens.plugins.vlm.local.loading import ModelFiles, check_model_dir
from framelens.plugins.vlm.local.measure import frame
from framelens.plugins.vlm.local.model import LoadedModel
from framelens.plugins.vlm.local.tiny import TINY_FAMILIES, build_tiny_model

__all__ = ["check_case", "engine_tokens"]

TEXTS = ["describe the picture",
         "is there smoke or fire in the kitchen? answer yes or no, then say why in a few words",
         "a dog runs"]


def engine_tokens(engine: EngineAPI, prompts: Sequence[Any], n: int,
                  timeout: float = 120) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy tokens (EOS included, as it is produced) of ``prompts`` submitted together, and the first one's
    logits per step."""
    left = threading.Semaphore(0)
    errors: list[BaseException] = []
    jobs = []
    for p in prompts:
        def sink(kind: str, value: Any) -> None:
            if kind == "error":
                errors.append(value)
            if kind in ("done", "error"):
                left.release()
        job = engine.job(p, max_tokens=n, sampling=engine.sampling(temperature=0, top_p=1, top_k=0, seed=None),
                         sink=sink)
        jobs.append(job)
    jobs[0].keep_logits = True
    for job in jobs:
        engine.submit(job)
    for _ in jobs:
        if not left.acquire(timeout=timeout):
            raise TimeoutError("the engine did not finish")
    if errors:
        raise errors[0]
    return [list(j.tokens) for j in jobs], list(jobs[0].logits)


def _hf_tokens(hf: HFSide, images: Sequence[Any], texts: Sequence[str], n: int,
               eos: set[int]) -> tuple[list[list[int]], torch.Tensor]:
    inp = hf.batch(images, texts)
    out = hf.model.generate(**inp, max_new_tokens=n, do_sample=False, output_logits=True,
                            return_dict_in_generate=True)
    seqs = []
    for row in out.sequences[:, inp["input_ids"].shape[1]:].tolist():
        ids: list[int] = []
        for t in row:
            ids.append(t)
            if t in eos:
                break
        seqs.append(ids)
    return seqs, torch.stack(out.logits)[:, 0].float().cpu()


def _agree(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def check_case(name: str, model: LoadedModel, hf: HFSide, tokens: int) -> list[dict[str, Any]]:
    """Batch-1 and batched comparisons of one model on one device/dtype; one dict per comparison."""
    engine = EngineAPI(model, slots=4, capacity=512, prefix_slots=0, fixed_shapes=True)
    eos = set(model.eos)
    images = [frame(i + 1, 48, 64) for i in range(len(TEXTS))]
    prompts = [model.prompt([ChatMessage("user", (ImagePart(image=img), TextPart(t)))])
               for img, t in zip(images, TEXTS, strict=True)]
    out = []
    try:
        for i, p in enumerate(prompts):
            (ours,), logits = engine_tokens(engine, [p], tokens)
            (ref,), ref_logits = _hf_tokens(hf, [images[i]], [TEXTS[i]], tokens, eos)
            k = _agree(ours, ref)
            diff = max(((a.float().cpu() - b).abs().max().item() for a, b in zip(logits[:k + 1], ref_logits,
                                                                                strict=False)), default=0.0)
            out.append({"case": name, "batch": 1, "prompt": i, "prompt_tokens": len(p.ids), "equal": ours == ref,
                        "agree": k, "engine_len": len(ours), "hf_len": len(ref),
                        "max_abs_logit_diff": round(diff, 6), "distinct_tokens": len(set(ref))})
        ours_b, _ = engine_tokens(engine, prompts, tokens)
        ref_b, _ = _hf_tokens(hf, images, TEXTS, tokens, eos)
        out.append({"case": name, "batch": len(prompts), "equal": ours_b == ref_b,
                    "agree": [_agree(a, b) for a, b in zip(ours_b, ref_b, strict=True)],
                    "engine_len": [len(a) for a in ours_b], "hf_len": [len(b) for b in ref_b]})
        if model.device.type == "cuda":
            # the CUDA graphs against the same step launched eagerly: the same kernels, so the same tokens
            eager = EngineAPI(model, slots=4, capacity=512, prefix_slots=0, fixed_shapes=True, cuda_graphs=False)
            try:
                plain, _ = engine_tokens(eager, prompts, tokens)
            finally:
                eager.close()
            stats = {**engine.decode_graphs.stats, "prefill": engine.prefill_graphs.stats}
            replayed = stats["replays"] > 0 and engine.prefill_graphs.stats["replays"] > 0
            out.append({"case": name, "batch": "graphs-vs-eager", "equal": plain == ours_b and replayed,
                        "agree": [_agree(a, b) for a, b in zip(ours_b, plain, strict=True)],
                        "engine_len": [len(a) for a in ours_b], "hf_len": [len(b) for b in plain],
                        "graphs": stats})
    finally:
        engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--preset", choices=("", *GEMMA3_SHAPES), default="", help="also check this Gemma 3 preset")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {f: build_tiny_model(f, Path(tmp) / f) for f in TINY_FAMILIES}
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            cases: list[tuple[str, LoadedModel, HFSide]] = []
            for family, path in dirs.items():
                cases.append((family, LoadedModel(check_model_dir(path), device, dtype),
                              HFSide.load(path, device, dtype)))
            if args.preset:
                import transformers

                T: Any = transformers
                path, hf_model = build_gemma3(args.preset, Path(tmp) / dtype_name, device, dtype)
                with shared_weights(hf_model):
                    config = json.loads((path / "config.json").read_text())
                    model = LoadedModel(ModelFiles(path, args.preset, config, "gemma3", ()), device, dtype)
                cases.append((args.preset, model, HFSide(hf_model, T.AutoProcessor.from_pretrained(path),
                                                         device)))
            for name, model, hf in cases:
                for row in check_case(name, model, hf, args.tokens):
                    row.update(dtype=dtype_name, device=args.device)
                    failed |= dtype_name == "float32" and not row["equal"]
                    print(json.dumps(row), flush=True)
            del cases
            if device.type == "cuda":
                torch.cuda.empty_cache()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
