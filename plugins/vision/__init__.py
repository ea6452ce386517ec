"""Classical computer vision on the CPU: ``blur`` and ``facedetect``."""

from __future__ import annotations

from framelens import RegisterFn, hookimpl

from . import classical

__all__: list[str] = []


@hookimpl
def register_processors(register: RegisterFn) -> None:
    classical.register(register)
