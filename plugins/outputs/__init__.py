"""Outputs: the MJPEG server (``-o mjpeg``), video files (``-o out.mp4``) and ``none``.

RTSP output lives with RTSP input in :mod:`framelens.plugins.rtsp`.
"""

from __future__ import annotations

from framelens import RegisterFn, hookimpl

from . import mjpeg, videofile

__all__: list[str] = []


@hookimpl
def register_outputs(register: RegisterFn) -> None:
    mjpeg.register(register)
    videofile.register(register)
