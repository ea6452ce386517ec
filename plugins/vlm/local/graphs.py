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
Graphs are captured lazily, the first time a pair is needed (see :mod:`.capture`).

Without CUDA, with graphs turned off (``local-cuda-graphs=false``), or after a
capture failed (logged once, then eager for good), the same step runs eagerly
from the same buffers, so the bookkeeping is one code path on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .capture import GraphCache
from .decoder import KVPool
from .model import LoadedModel

__all__ = ["MIN_WINDOW", "DecodeGraphs", "batch_bucket", "window_bucket"]

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

    def __init__(self, model: LoadedModel, pool: KVPool, masks: MaskFn, *, slots: int, capacity: int,
                 mrope: bool, device: torch.device, fixed: bool = True, graphs: bool = True) -> None:
        self.model, self.pool, self.masks = model, pool, masks
        self.slots, self.capacity, self.mrope, self.device = slots, capacity, mrope, device
        self.fixed = fixed
        self.cache = GraphCache("decode step", device, enabled=graphs and fixed)
        self._buffers: dict[int, _Buffers] = {}
        self.eager_steps = 0

    @property
    def graphs_on(self) -> bool:
        return self.cache.enabled

    @graphs_on.setter
    def graphs_on(self, on: bool) -> None:
        self.cache.enabled = on

    @property
    def stats(self) -> dict[str, int]:
        return {"captured": self.cache.captured, "replays": self.cache.replays, "eager_steps": self.eager_steps}

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
        out = self.cache.replay((b, window), lambda: self._run(buf, window), lambda: self._park(buf))
        if out is not None:
            return out[:n]
        self.eager_steps += 1
        return self._run(buf, window)[:n]

    def _run(self, buf: _Buffers, window: int) -> torch.Tensor:
        masks = self.masks(buf.positions, buf.valid, window)
        embeds = self.model.decoder.embed(buf.tokens)
        extra: dict[str, torch.Tensor] = {}
        if self.mrope:
            # after the prompt every axis of a text token advances together: position + the prompt's offset
            extra["rope_positions"] = (buf.positions + buf.deltas)[None].expand(3, -1, -1)
        logits: torch.Tensor = self.model.decoder(embeds, buf.positions, self.pool, buf.slots[:, None], buf.slots,
                                            window, masks, buf.last, **extra)
        return logits

    def _park(self, buf: _Buffers) -> Callable[[], None]:
        # the warm-up runs write keys at position 0 of the scratch slot only
        saved = buf.packed.clone()
        buf.packed[:2].zero_()
        buf.packed[2].fill_(self.pool.scratch)
        buf.packed[3].zero_()

        def restore() -> None:
            buf.packed.copy_(saved)

        return restore
