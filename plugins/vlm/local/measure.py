"""Timing an engine: prompt, first token, decode speed at batch 1 and batch N, vision per image.

Used by ``framelens engine bench`` and ``bench/local_engine.py``. Every number
comes from a real request through the engine thread (the same path the
backend uses), with the engine's own usage and timings.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from framelens import ChatMessage, ImagePart, TextPart, Usage, VLMTimings

from .engine import EngineAPI

__all__ = ["DEFAULT_TEXT", "frame", "measure_engine", "run_batch", "time_choices"]


def frame(seed: int, h: int = 480, w: int = 640) -> np.ndarray:
    """A camera-sized random BGR frame."""
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3), dtype=np.uint8)


DEFAULT_TEXT = "Describe what is in this picture in one short sentence."


def _messages(img: np.ndarray, text: str = DEFAULT_TEXT) -> list[ChatMessage]:
    return [ChatMessage("user", (ImagePart(image=img), TextPart(text)))]


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without this a host clock times the launch, not the work
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batch(engine: EngineAPI, prompts: Sequence[Any], tokens: int, *, ignore_eos: bool = True,
              timeout: float = 600) -> tuple[float, list[tuple[Usage, VLMTimings]]]:
    """Run ``prompts`` together; wall seconds and each one's usage and timings."""
    done = threading.Semaphore(0)
    results: list[Any] = [None] * len(prompts)
    eos = engine.model.eos
    if ignore_eos:
        engine.model.eos = frozenset()  # measure exactly `tokens` tokens per request
    try:
        jobs = []
        for i, p in enumerate(prompts):
            def sink(kind: str, value: Any, i: int = i) -> None:
                if kind in ("done", "error"):
                    results[i] = value
                    done.release()
            jobs.append(engine.job(p, max_tokens=tokens, sampling=engine.sampling(temperature=0, top_p=1, top_k=0,
                                                                                  seed=None), sink=sink))
        started = time.perf_counter()
        for j in jobs:
            engine.submit(j)
        for _ in jobs:
            if not done.acquire(timeout=timeout):
                raise TimeoutError("the engine did not finish")
        wall = time.perf_counter() - started
    finally:
        engine.model.eos = eos
    out = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        _, usage, timings = r
        out.append((usage, timings))
    return wall, out


def time_choices(engine: EngineAPI, rules: int, *, seed: int = 0, timeout: float = 600) -> float:
    """Seconds to score ``rules`` yes/no questions about one new frame through the ``choices`` path (what
    the alerts evaluator sends per frame: one conversation per rule, the image shared)."""
    img = frame(seed)
    prompts = [engine.model.prompt(_messages(img, f"Rule {i}: is there a person in zone {i}? Answer yes or no."))
               for i in range(rules)]
    done = threading.Event()
    result: list[Any] = []

    def sink(kind: str, value: Any) -> None:
        result.append(value)
        done.set()

    job = engine.choice_job(prompts, engine.choice_tokens(["yes", "no"]), sink)
    started = time.perf_counter()
    engine.submit(job)
    if not done.wait(timeout):
        raise TimeoutError("the engine did not score the choices")
    took = time.perf_counter() - started
    if isinstance(result[0], BaseException):
        raise result[0]
    return took


def measure_engine(engine: EngineAPI, *, tokens: int = 64, batch: int = 8, repeats: int = 3,
                   seed: int = 0, text: str = DEFAULT_TEXT, rules: int = 0) -> dict[str, Any]:
    """The engine's figures (seconds, tokens/s); medians of ``repeats`` runs. Every image is new (seeds from
    ``seed``), so no figure profits from the engine's image-feature cache. ``text`` follows the image.
    ``rules`` > 0 also times that many yes/no rules on one frame (:func:`time_choices`)."""
    model = engine.model
    one = [model.prompt(_messages(frame(seed + i), text)) for i in range(repeats + 1)]
    run_batch(engine, one[:1], 4)  # warm-up
    singles = [run_batch(engine, [p], tokens)[1][0] for p in one[1:]]
    decode = statistics.median((u.completion_tokens - 1) / t.generate_s for u, t in singles if t.generate_s)
    ttft = statistics.median(t.first_token_s or 0.0 for _, t in singles)
    many = [model.prompt(_messages(frame(seed + 100 + i), text)) for i in range(batch)]
    wall, res = run_batch(engine, many, tokens)
    aggregate = sum(u.completion_tokens for u, _ in res) / wall
    px = one[0].pixels[0][None]
    vision = []
    for _ in range(repeats):
        _sync(model.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            if one[0].grids:  # Qwen2.5-VL: the patches need their grid
                model.vision(px, one[0].grids[0])
            else:
                model.vision(px)
        _sync(model.device)
        vision.append(time.perf_counter() - t0)
    captions = []
    for i in range(repeats):
        img = frame(seed + 200 + i)
        t0 = time.perf_counter()
        prompt = model.prompt(_messages(img, text))
        run_batch(engine, [prompt], 32)
        captions.append(time.perf_counter() - t0)
    t0 = time.perf_counter()  # B cameras each asking for a 32-token caption of a new frame at once
    run_batch(engine, [model.prompt(_messages(frame(seed + 400 + i), text)) for i in range(batch)], 32)
    cameras = time.perf_counter() - t0
    extra: dict[str, Any] = {f"captions_per_s_per_camera_b{batch}": round(1 / cameras, 2)}
    if rules:
        extra[f"choices_{rules}_rules_s"] = round(statistics.median(
            time_choices(engine, rules, seed=seed + 300 + i) for i in range(repeats)), 4)
    return {
        **extra, "prompt_tokens": len(one[0].ids), "image_tokens": one[0].spans[0].end - one[0].spans[0].start,
        "decode_tok_s_b1": round(decode, 1), f"decode_tok_s_b{batch}_total": round(aggregate, 1),
        "vision_s_per_image": round(statistics.median(vision), 5), "first_token_s": round(ttft, 4),
        "frame_to_32_tokens_s": round(statistics.median(captions), 4),
    }
