"""The decode step at fixed shapes, replayed as CUDA graphs: one per (batch bucket, key window).

Decoding one token per sequence launches a few hundred small kernels per step
(about thirty per layer). On a fast GPU the host cannot launch them as fast as
the GPU runs them, so an eager batch-1 step is bound by Python and the driver,
far from the memory-bandwidth limit. A CUDA graph records the whole step once
and replays it with one launch.

A graph fixes every shape and address, so the step reads static buffers (token
ids, positions, KV slots, mRoPE offsets: one packed ``[4, B]`` tensor, filled by
one host-to-device copy per step) and writes a static logits buffer that the
next replay overwrites. Shapes are bucketed: the batch to a power of two up to
the engine's slots (padding rows write into the KV pool's scratch slot and are
cut off), the key window to a power of two from :data:`MIN_WINDOW` up to the
KV capacity (so attention reads only the live part of the cache, not all of it).
Graphs are captured lazily, the first time a pair is needed, after a warm-up
run on a side stream; the warm-up also fills the decoder's constant caches,
because nothing may be copied from the host while a graph is being captured,
and it writes only into the scratch slot. All graphs share one memory pool:
they never run at the same time.

Without CUDA, with graphs turned off (``local-cuda-graphs=false``), or after a
capture failed (logged once, then eager for good), the same step runs eagerly
from the same buffers, so the bookkeeping is one code path on every device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .decoder import Decoder, KVPool

__all__ = ["MIN_WINDOW", "DecodeGraphs", "batch_bucket", "window_bucket"]

log = logging.getLogger("framelens.local")

MIN_WINDOW = 256

MaskFn = Callable[[torch.Tensor, torch.Tensor, int], list[torch.Tensor]]


def batch_bucket(n: int, limit: int) -> int:
    """The smallest power of two that holds ``n`` rows, at most ``limit`` (the engine's slots)."""
    if n < 1 or n > limit:
        raise ValueError(f"batch of {n} rows does not fit {limit} slots")
    b = 1
    while b < n:
        b *= 2
    return min(b, limit)


def window_bucket(last_position: int, capacity: int) -> int:
    """Keys a step must read when its furthest row writes at ``last_position``: the smallest power of two
    (at least :data:`MIN_WINDOW`) above it, at most ``capacity``."""
    if not 0 <= last_position < capacity:
        raise ValueError(f"position {last_position} is outside the KV capacity {capacity}")
    w = MIN_WINDOW
    while w <= last_position:
        w *= 2
    return min(w, capacity)


class _Buffers:
    """The static inputs of one batch bucket; ``packed`` rows: tokens, positions, slots, mRoPE deltas."""

    def __init__(self, b: int, device: torch.device, scratch: int) -> None:
        self.packed = torch.zeros((4, b), dtype=torch.long, device=device)
        self.packed[2].fill_(scratch)
        self.tokens = self.packed[0].view(b, 1)
        self.positions = self.packed[1].view(b, 1)
        self.slots = self.packed[2]
        self.deltas = self.packed[3].view(b, 1)
        self.valid = torch.ones((b, 1), dtype=torch.bool, device=device)
        self.last = torch.zeros(b, dtype=torch.long, device=device)


class DecodeGraphs:
    """Runs decode steps for :class:`~.engine.Engine` (see the module docstring).

    ``masks`` builds the per-layer attention masks from positions on the device
    (the engine's own mask code, so the graph and the eager path agree).
    ``fixed`` buckets the shapes as above; without it (the CPU default) a step
    runs at the exact batch and a window of the next multiple of 64 keys, which
    is faster where nothing is captured. ``graphs`` asks for CUDA graphs; it
    needs ``fixed`` and CUDA, and is ignored otherwise.
    """

    def __init__(self, decoder: Decoder, pool: KVPool, masks: MaskFn, *, slots: int, capacity: int,
                 mrope: bool, device: torch.device, fixed: bool = True, graphs: bool = True) -> None:
        self.decoder, self.pool, self.masks = decoder, pool, masks
        self.slots, self.capacity, self.mrope, self.device = slots, capacity, mrope, device
        self.fixed = fixed
        self.graphs_on = graphs and fixed and device.type == "cuda"
        self._buffers: dict[int, _Buffers] = {}
        self._graphs: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}
        self._pool_handle: Any = None
        self.stats = {"captured": 0, "replays": 0, "eager_steps": 0}

    def buffers(self, b: int) -> _Buffers:
        if b not in self._buffers:
            self._buffers[b] = _Buffers(b, self.device, self.pool.scratch)
        return self._buffers[b]

    def step(self, tokens: Sequence[int], positions: Sequence[int], slots: Sequence[int],
             deltas: Sequence[int] | None = None) -> torch.Tensor:
        """Logits ``[n, V]`` (float32) for ``n`` rows, each writing its key at its position in its slot.

        The result may be a view of a static buffer: use it before the next step.
        """
        n = len(tokens)
        if self.fixed:
            b, window = batch_bucket(n, self.slots), window_bucket(max(positions), self.capacity)
        else:
            b, window = n, min(self.capacity, (max(positions) // 64 + 1) * 64)
        pad = b - n
        host = torch.tensor([list(tokens) + [0] * pad, list(positions) + [0] * pad,
                             list(slots) + [self.pool.scratch] * pad,
                             (list(deltas) if deltas is not None else [0] * n) + [0] * pad], dtype=torch.long)
        buf = self.buffers(b)
        buf.packed.copy_(host)
        if self.graphs_on:
            graph = self._graphs.get((b, window)) or self._capture(b, window)
            if graph is not None:
                graph[0].replay()
                self.stats["replays"] += 1
                return graph[1][:n]
        self.stats["eager_steps"] += 1
        return self._run(buf, window)[:n]

    def _run(self, buf: _Buffers, window: int) -> torch.Tensor:
        masks = self.masks(buf.positions, buf.valid, window)
        embeds = self.decoder.embed(buf.tokens)
        extra: dict[str, torch.Tensor] = {}
        if self.mrope:
            # after the prompt every axis of a text token advances together: position + the prompt's offset
            extra["rope_positions"] = (buf.positions + buf.deltas)[None].expand(3, -1, -1)
        logits: torch.Tensor = self.decoder(embeds, buf.positions, self.pool, buf.slots[:, None], buf.slots,
                                            window, masks, buf.last, **extra)
        return logits

    def _capture(self, b: int, window: int) -> tuple[Any, torch.Tensor] | None:
        buf = self.buffers(b)
        saved = buf.packed.clone()
        try:
            # warm-up and capture write keys at position 0 of the scratch slot only
            buf.packed[:2].zero_()
            buf.packed[2].fill_(self.pool.scratch)
            buf.packed[3].zero_()
            side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._run(buf, window)
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self._pool_handle is None:
                self._pool_handle = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool_handle, capture_error_mode="thread_local"):
                out = self._run(buf, window)
        except Exception as exc:  # a step that cannot be captured still runs, eagerly
            log.warning("local engine: CUDA graph capture failed (%s: %s); decoding eagerly from now on",
                        type(exc).__name__, exc)
            self.graphs_on = False
            return None
        finally:
            buf.packed.copy_(saved)
        self._graphs[(b, window)] = (graph, out)
        self.stats["captured"] += 1
        return self._graphs[(b, window)]
