"""Overlays that draw on the video: ``captions`` (what other processors found) and ``fps``.

The text helpers they share are public, in :mod:`framelens.drawing`.
"""

from __future__ import annotations

from framelens import RegisterFn, hookimpl

from . import captions, fps

__all__: list[str] = []


@hookimpl
def register_processors(register: RegisterFn) -> None:
    captions.register(register)
    fps.register(register)
