"""Helpers for testing plugins: fake sources, collecting outputs, in-process runs.

Also available to third-party plugin authors::

    from framelens.testing import CollectingOutput, plugin_registered, run_pipeline
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .cli.run import config_from_args
from .frame import Frame
from .hookspecs import hookimpl
from .output import Output
from .plugin_manager import get_plugin_manager
from .registry import RegisterFn
from .runtime import Runtime
from .source import Source, SourceInfo

__all__ = ["CollectingOutput", "ListSource", "plugin_registered", "run_pipeline"]


class ListSource(Source):
    """Plays a fixed list of images, once (``live=False``) or as a live source."""

    def __init__(self, images: Sequence[np.ndarray], *, live: bool = False) -> None:
        super().__init__("list")
        self.images = list(images)
        self.live = live
        self.reconnect = False
        self._i = 0

    def open(self) -> SourceInfo:
        self._i = 0
        h, w = self.images[0].shape[:2] if self.images else (None, None)
        return SourceInfo(w, h, None, len(self.images))

    def read(self) -> np.ndarray | None:
        if self._i >= len(self.images):
            return None
        self._i += 1
        return self.images[self._i - 1]


class CollectingOutput(Output):
    """Keeps every frame written to it (``frames``), for assertions."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.started = False
        self.closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = True

    def write(self, frame: Frame) -> None:
        with self._lock:
            self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


@contextlib.contextmanager
def plugin_registered(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` with the process's plugin manager for the ``with`` block."""
    pm = get_plugin_manager()
    pm.register(plugin, name)
    try:
        yield
    finally:
        pm.unregister(name)


class _CollectPlugin:
    def __init__(self, output: CollectingOutput) -> None:
        self.output = output

    @hookimpl
    def register_outputs(self, register: RegisterFn) -> None:
        register("collect", lambda target, options, context: self.output, help="test output")


def run_pipeline(argv: Sequence[str]) -> tuple[dict[str, Any], CollectingOutput, Runtime]:
    """Run ``framelens run ARGV`` in this process with an extra ``-o collect`` output.

    Returns the benchmark report, the collected frames and the runtime.
    """
    from .cli import build_parser

    output = CollectingOutput()
    args = build_parser().parse_args(["run", *argv])
    if "collect" not in args.output:
        args.output = [*args.output, "collect"]
    with plugin_registered(_CollectPlugin(output), "framelens-testing-collect"):
        cfg = config_from_args(args)
        manager = get_plugin_manager()
        runtime = Runtime(cfg, manager.registry, stdout=io.StringIO(), plugins=manager)
        runtime.build()
        report = runtime.run()
    return report, output, runtime
