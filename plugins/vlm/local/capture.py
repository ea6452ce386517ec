"""CUDA graphs keyed by shape: captured on first use, replayed after, one memory pool per cache.

A graph records the kernels of one call at fixed shapes and addresses, so its
caller keeps the inputs in static buffers and reads the output from the tensor
the capture produced (overwritten by every replay). Before a capture the call
runs twice on a side stream: that loads kernels and fills the callers' constant
caches, since nothing may be copied from the host while capturing. Those runs
really execute, so the caller first *parks* its buffers (points every KV write
at the pool's scratch slot) and gets them back afterwards. Graphs of one cache
share a memory pool: they never run at the same time, and each output is used
before the next replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

import torch

__all__ = ["GraphCache"]

log = logging.getLogger("framelens.local")

Park = Callable[[], Callable[[], None]]


class GraphCache:
    """Graphs of one kind of call (see the module docstring).

    ``enabled`` is off without CUDA; the first capture that fails is logged once
    and turns it off for good, so the caller runs eagerly from then on. Past
    ``limit`` graphs new shapes run eagerly (no eviction: a graph's memory stays
    in the pool while it exists).
    """

    def __init__(self, name: str, device: torch.device, *, enabled: bool, limit: int | None = None) -> None:
        self.name, self.device, self.limit = name, device, limit
        self.enabled = enabled and device.type == "cuda"
        self._graphs: dict[Hashable, tuple[Any, torch.Tensor]] = {}
        self._pool: Any = None
        self.captured = 0
        self.replays = 0

    def replay(self, key: Hashable, run: Callable[[], torch.Tensor], park: Park) -> torch.Tensor | None:
        """The output of the graph for ``key`` (captured from ``run`` if new), or None: run it eagerly."""
        if not self.enabled:
            return None
        entry = self._graphs.get(key)
        if entry is None:
            if self.limit is not None and len(self._graphs) >= self.limit:
                return None
            entry = self._capture(key, run, park)
            if entry is None:
                return None
        entry[0].replay()
        self.replays += 1
        return entry[1]

    def _capture(self, key: Hashable, run: Callable[[], torch.Tensor], park: Park) -> tuple[Any, torch.Tensor] | None:
        restore = park()
        try:
            side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    run()
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                out = run()
        except Exception as exc:  # a call that cannot be captured still runs, eagerly
            log.warning("local engine: CUDA graph capture of the %s failed (%s: %s); running it eagerly from now on",
                        self.name, type(exc).__name__, exc)
            self.enabled = False
            return None
        finally:
            restore()
        self._graphs[key] = (graph, out)
        self.captured += 1
        return self._graphs[key]
