"""RTSP in and out: the ``rtsp`` output (gst-rtsp-server) and the ``rtsp://`` source.

    framelens run -s testpattern -o rtsp                  # rtsp://127.0.0.1:5011/out
    framelens run -s rtsp://cam.local/stream1 -p captions -o rtsp://0.0.0.0:8554/live

The output needs PyGObject and GStreamer (``pip install 'framelens[rtsp]'`` and the
apt packages in docs/rtsp.md); without them it fails at start naming what to
install. The source only needs OpenCV.
"""

from __future__ import annotations

from framelens import RegisterFn, hookimpl

from .output import RtspOutputOptions, make_output
from .source import RtspSourceOptions, make_source

__all__ = ["register_outputs", "register_sources"]


@hookimpl
def register_outputs(register: RegisterFn) -> None:
    register("rtsp", make_output, options=RtspOutputOptions, schemes=("rtsp",),
             help="serve the processed video over RTSP (default rtsp://127.0.0.1:5011/out), H.264")


@hookimpl
def register_sources(register: RegisterFn) -> None:
    register("rtsp", make_source, options=RtspSourceOptions, schemes=("rtsp", "rtsps"),
             help="IP camera or RTSP server, low latency, reconnects when the stream drops")
