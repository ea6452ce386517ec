"""Prefill as CUDA graphs: one per (rows, tokens, key window) bucket.

An eager prefill pays the same per-kernel launch cost as a decode step, once
per call, which makes the host, not the GPU, most of the time to first token
and of a choices call (one prefill per group of rules). The shapes a camera
sends repeat (the same prompt template and a fixed number of image tokens per
frame), so a graph per shape is replayed nearly every time. The engine pads a
prefill to the bucket (rows to a power of two, tokens to a multiple of
:data:`TOKEN_STEP`, the key window as for decoding), with padding written into
the scratch slot, and hands the padded tensors here: they are copied into the
bucket's static buffers and the graph replays. Embedding and image features stay
outside the graph (their Python depends on where images sit in each prompt).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from .capture import GraphCache
from .decoder import KVPool
from .model import LoadedModel

__all__ = ["TOKEN_STEP", "PrefillGraphs", "token_bucket"]

TOKEN_STEP = 64

Masks = Callable[..., list[torch.Tensor]]


def token_bucket(n: int, capacity: int) -> int:
    """Tokens a padded prefill row holds: ``n`` rounded up to a multiple of :data:`TOKEN_STEP`, at most
    ``capacity``."""
    return min(capacity, -(-n // TOKEN_STEP) * TOKEN_STEP)


class PrefillGraphs:
    """Runs the engine's prefill forward, replayed as a CUDA graph where one is captured (or can be).

    ``limit`` bounds the number of shapes kept (each holds its static buffers);
    past it, new shapes run eagerly.
    """

    def __init__(self, model: LoadedModel, pool: KVPool, masks: Masks, *, device: torch.device, enabled: bool,
                 limit: int = 32) -> None:
        self.model, self.pool, self.masks = model, pool, masks
        self.cache = GraphCache("prefill", device, enabled=enabled, limit=limit)
        self._buffers: dict[Hashable, dict[str, torch.Tensor]] = {}
        self.eager_calls = 0

    @property
    def on(self) -> bool:
        return self.cache.enabled

    @property
    def stats(self) -> dict[str, int]:
        return {"captured": self.cache.captured, "replays": self.cache.replays, "eager_calls": self.eager_calls}

    def run(self, inputs: dict[str, torch.Tensor | None], window: int) -> torch.Tensor:
        """Logits ``[B, V]`` after each row's ``last`` token. ``inputs``: ``embeds``, ``positions``, ``slots``,
        ``valid``, ``read``, ``last`` and (None where unused) ``qblock``, ``kblock``, ``rope``, as
        :meth:`.engine.Engine.prefill` builds them. The result may be a static buffer: use it at once."""
        given = {k: t for k, t in inputs.items() if t is not None}
        if self.cache.enabled:
            key = (window, *((k, tuple(t.shape)) for k, t in given.items()))
            buf = self._buffers.get(key)
            if buf is not None:
                for k, t in given.items():
                    buf[k].copy_(t)
            elif self.cache.limit is None or len(self._buffers) < self.cache.limit:
                buf = self._buffers[key] = {k: t.clone() for k, t in given.items()}
            if buf is not None:
                static = buf
                out = self.cache.replay(key, lambda: self._forward(static, window), lambda: self._park(static))
                if out is not None:
                    return out
        self.eager_calls += 1
        return self._forward(given, window)

    def _forward(self, t: dict[str, torch.Tensor], window: int) -> torch.Tensor:
        masks = self.masks(t["positions"], t["valid"], window, t.get("qblock"), t.get("kblock"))
        extra = {"rope_positions": t["rope"]} if "rope" in t else {}
        logits: torch.Tensor = self.model.decoder(t["embeds"], t["positions"], self.pool, t["slots"], t["read"], window,
                                            masks, t["last"], **extra)
        return logits

    def _park(self, t: dict[str, torch.Tensor]) -> Callable[[], None]:
        # warm-up runs write into the scratch slot only, at the rows' own positions
        saved = t["slots"].clone(), t["read"].clone()
        t["slots"].fill_(self.pool.scratch)
        t["read"].fill_(self.pool.scratch)

        def restore() -> None:
            t["slots"].copy_(saved[0])
            t["read"].copy_(saved[1])

        return restore
