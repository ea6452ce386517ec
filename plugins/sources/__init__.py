"""Frame sources: the test pattern, cameras (V4L2, CSI, GStreamer), HTTP streams, files and images.

RTSP input lives with the RTSP output in :mod:`framelens.plugins.rtsp`.
"""

from __future__ import annotations

from framelens import RegisterFn, hookimpl

from . import cameras, testpattern

__all__: list[str] = []


@hookimpl
def register_sources(register: RegisterFn) -> None:
    testpattern.register(register)
    cameras.register(register)
