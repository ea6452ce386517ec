"""Helpers for the local engine tests: HF references, synchronous jobs, test images."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framelens import ChatMessage, ImagePart, TextPart

FAMILIES = ("llava", "llava-qwen2", "gemma3", "qwen2_5_vl")


def image(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A random BGR image."""
    return np.random.RandomState(seed).randint(0, 255, (h, w, 3), dtype=np.uint8)


def messages(text: str, img: np.ndarray | None = None, system: str | None = None) -> list[ChatMessage]:
    out = [ChatMessage("system", system)] if system else []
    parts: tuple[Any, ...] = (TextPart(text),) if img is None else (ImagePart(image=img), TextPart(text))
    return [*out, ChatMessage("user", parts)]


def hf_messages(msgs: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    hf, images = [], []
    for m in msgs:
        parts: list[dict[str, Any]] = []
        for p in m.parts():
            if isinstance(p, TextPart):
                parts.append({"type": "text", "text": p.text})
            elif isinstance(p, ImagePart):
                assert p.image is not None
                images.append(p.image[:, :, ::-1])
                parts.append({"type": "image"})
        hf.append({"role": m.role, "content": parts})
    return hf, images


class HFReference:
    """The transformers model of a tiny checkpoint: greedy generate() and full-forward logits."""

    def __init__(self, path: Path) -> None:
        import transformers as T

        self.model = T.AutoModelForImageTextToText.from_pretrained(path).eval()
        try:
            self.processor = T.AutoProcessor.from_pretrained(path)
        except OSError:  # Qwen2.5-VL without torchvision: its video processor cannot load
            from framelens.plugins.vlm.local.qwen import load_processor

            self.processor = load_processor(path, self.model.config.architectures or [])

    def inputs(self, batch: Sequence[Sequence[ChatMessage]]) -> Any:
        from PIL import Image

        texts, images = [], []
        for msgs in batch:
            hf, imgs = hf_messages(msgs)
            texts.append(self.processor.apply_chat_template(hf, add_generation_prompt=True, tokenize=False))
            images.append([Image.fromarray(np.ascontiguousarray(i)) for i in imgs])
        self.processor.tokenizer.padding_side = "left"
        nested = type(self.processor).__name__.startswith("Gemma3")  # Gemma 3 wants one image list per prompt
        flat = [i for row in images for i in row]
        return self.processor(text=texts, images=(images if nested else flat) if flat else None,
                              return_tensors="pt", padding=True)

    def generate(self, batch: Sequence[Sequence[ChatMessage]], n: int) -> tuple[list[list[int]], Any]:
        """Greedy ids (up to EOS) per conversation, and the per-step logits [steps, B, V]."""
        import torch

        inputs = self.inputs(batch)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=n, do_sample=False, output_logits=True,
                                      return_dict_in_generate=True)
        eos = set(self.model.generation_config.eos_token_id if isinstance(
            self.model.generation_config.eos_token_id, list) else [self.model.generation_config.eos_token_id])
        seqs = []
        for row in out.sequences[:, inputs["input_ids"].shape[1]:].tolist():
            ids = []
            for t in row:
                ids.append(t)
                if t in eos:
                    break
            seqs.append(ids)
        return seqs, torch.stack(out.logits)

    def last_logits(self, msgs: Sequence[ChatMessage]) -> Any:
        import torch

        with torch.no_grad():
            return self.model(**self.inputs([msgs])).logits[0, -1]


def run_jobs(engine: Any, prompts: Sequence[Any], n: int, *, keep_logits: bool = False, stops: tuple[str, ...] = (),
             temperature: float = 0.0, seed: int | None = None, timeout: float = 30) -> list[Any]:
    """Submit one job per prompt at once, wait for all; each job gets ``.events``."""
    jobs = []
    left = threading.Semaphore(0)
    for p in prompts:
        events: list[tuple[str, Any]] = []

        def sink(kind: str, value: Any, events: list[tuple[str, Any]] = events) -> None:
            events.append((kind, value))
            if kind in ("done", "error"):
                left.release()

        job = engine.job(p, max_tokens=n, sampling=engine.sampling(temperature=temperature, top_p=1.0, top_k=0,
                                                                  seed=seed), sink=sink, stops=stops)
        job.keep_logits = keep_logits
        job.events = events
        jobs.append(job)
    for job in jobs:
        engine.submit(job)
    for _ in jobs:
        assert left.acquire(timeout=timeout), "the engine did not finish in time"
    return jobs


def text_of(job: Any) -> str:
    return "".join(v for k, v in job.events if k == "text")


def done_of(job: Any) -> Any:
    kind, value = job.events[-1]
    assert kind == "done", job.events[-1]
    return value


def make_engine(path: Path, **kw: Any) -> Any:
    import torch

    from framelens.plugins.vlm.local.engine import EngineAPI
    from framelens.plugins.vlm.local.loading import check_model_dir
    from framelens.plugins.vlm.local.model import LoadedModel

    model = LoadedModel(check_model_dir(path), torch.device("cpu"), torch.float32)
    return EngineAPI(model, slots=kw.pop("slots", 4), capacity=kw.pop("capacity", 256), **kw)
