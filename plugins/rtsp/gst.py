"""GStreamer for the RTSP output: lazy loading, install hints, encoder choice, pipeline text.

PyGObject and the GStreamer typelibs are optional (``pip install 'framelens[rtsp]'``
plus apt packages), so nothing here imports ``gi`` at module level: :func:`load_gst`
does it on first use and turns every missing piece into an :class:`OutputError`
that names the package to install.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from framelens import OutputError

__all__ = [
    "APT_PACKAGES",
    "ENCODERS",
    "EncoderSettings",
    "Gst",
    "check_elements",
    "choose_encoder",
    "load_gst",
    "media_launch",
]

APT_PACKAGES = (
    "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"
)
_PIP_HINT = (
    "install: pip install 'framelens[rtsp]' (builds PyGObject; needs apt packages libgirepository1.0-dev "
    f"libcairo2-dev pkg-config gcc) and apt install {APT_PACKAGES}"
)

# Preference order for encoder=auto: the Jetson hardware encoder first (it only exists
# on Jetson, where it frees the CPU for the pipeline), then x264, then OpenH264.
ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc")

# Which package provides each element we may use, for error messages.
_ELEMENT_PACKAGES = {
    "appsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
    "openh264enc": "gstreamer1.0-plugins-bad",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "nvv4l2h264enc": "NVIDIA's L4T GStreamer plugins (nvidia-l4t-gstreamer, part of JetPack)",
    "nvvidconv": "NVIDIA's L4T GStreamer plugins (nvidia-l4t-gstreamer, part of JetPack)",
}
_ENCODER_NEEDS = {
    "x264enc": ("x264enc",),
    "openh264enc": ("openh264enc",),
    "nvv4l2h264enc": ("nvvidconv", "nvv4l2h264enc", "h264parse"),
}
_COMMON_NEEDS = ("appsrc", "videoconvert", "rtph264pay")


@dataclass(frozen=True)
class Gst:
    """The loaded GObject-introspection modules."""

    Gst: Any
    GstRtspServer: Any
    GstVideo: Any
    GLib: Any


_lock = threading.Lock()
_loaded: Gst | None = None


def load_gst() -> Gst:
    """Import PyGObject and the GStreamer typelibs and initialise GStreamer (once).

    Raises :class:`OutputError` naming what to install when anything is missing.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        try:
            import gi
        except ImportError:
            raise OutputError(f"rtsp output: PyGObject (the 'gi' module) is not installed; {_PIP_HINT}") from None
        typelibs = {
            "Gst": "gir1.2-gstreamer-1.0",
            "GstVideo": "gir1.2-gst-plugins-base-1.0",
            "GstRtspServer": "gir1.2-gst-rtsp-server-1.0",
        }
        for name, package in typelibs.items():
            try:
                gi.require_version(name, "1.0")
            except ValueError:
                raise OutputError(
                    f"rtsp output: the GObject typelib {name}-1.0 is missing; apt install {package}"
                    f" (all of: {APT_PACKAGES})"
                ) from None
        from gi.repository import GLib, GstRtspServer, GstVideo
        from gi.repository import Gst as GstModule

        ok, _argv = GstModule.init_check(None)
        if not ok:
            raise OutputError("rtsp output: GStreamer failed to initialise (gst_init_check returned false)")
        _loaded = Gst(GstModule, GstRtspServer, GstVideo, GLib)
        return _loaded


def _missing(gst: Gst, elements: tuple[str, ...]) -> list[str]:
    return [e for e in elements if gst.Gst.ElementFactory.find(e) is None]


def _install_hint(missing: list[str]) -> str:
    packages = sorted({_ELEMENT_PACKAGES.get(e, "the GStreamer plugin providing it") for e in missing})
    return f"GStreamer element(s) {', '.join(missing)} not found; install {' and '.join(packages)}"


def check_elements(gst: Gst) -> None:
    """Raise :class:`OutputError` if an element every encoder path needs is missing."""
    missing = _missing(gst, _COMMON_NEEDS)
    if missing:
        raise OutputError(f"rtsp output: {_install_hint(missing)}")


def choose_encoder(gst: Gst, requested: str) -> str:
    """The encoder element to use: ``requested``, or the first available for ``auto``."""
    if requested != "auto":
        missing = _missing(gst, _ENCODER_NEEDS[requested])
        if missing:
            raise OutputError(f"rtsp output: encoder {requested} is not available: {_install_hint(missing)}")
        return requested
    for name in ENCODERS:
        if not _missing(gst, _ENCODER_NEEDS[name]):
            return name
    raise OutputError(
        "rtsp output: no H.264 encoder found (tried nvv4l2h264enc, x264enc, openh264enc); install "
        "gstreamer1.0-plugins-ugly (x264enc) or gstreamer1.0-plugins-bad (openh264enc)"
    )


@dataclass(frozen=True)
class EncoderSettings:
    """What the encoder is asked for; the frame size is set per media on the ``appsrc``."""

    encoder: str
    fps: float
    bitrate_kbps: int
    keyframe_interval: int

    @property
    def framerate(self) -> Fraction:
        return Fraction(self.fps).limit_denominator(1001)


def _encoder_chain(s: EncoderSettings) -> str:
    gop = s.keyframe_interval
    if s.encoder == "x264enc":
        # zerolatency: no B-frames and no lookahead, so a frame leaves the encoder at once.
        # threads=1: zerolatency would otherwise cut each frame into one slice per thread,
        # and FFmpeg-based players (ffplay, VLC, OpenCV) then show half-decoded frames
        # whenever a frame spans several RTP packets; frame threads would add latency
        # instead. One thread encodes 1080p30 ultrafast with room to spare on a PC CPU.
        # Baseline profile plays everywhere (old NVRs, browsers through gateways).
        return (
            "x264enc name=enc tune=zerolatency speed-preset=ultrafast threads=1"
            f" bitrate={s.bitrate_kbps} key-int-max={gop}"
            " ! video/x-h264,profile=baseline"
        )
    if s.encoder == "openh264enc":
        return (
            f"openh264enc name=enc complexity=low rate-control=bitrate bitrate={s.bitrate_kbps * 1000}"
            f" gop-size={gop} ! video/x-h264,profile=constrained-baseline"
        )
    # Jetson: the hardware encoder reads NVMM buffers, which nvvidconv uploads to.
    return (
        "nvvidconv ! video/x-raw(memory:NVMM),format=I420"
        f" ! nvv4l2h264enc name=enc bitrate={s.bitrate_kbps * 1000} iframeinterval={gop} idrinterval={gop}"
        " insert-sps-pps=true maxperf-enable=true preset-level=1 ! h264parse"
    )


def media_launch(s: EncoderSettings) -> str:
    """The ``gst-launch`` description of one RTSP media: appsrc -> H.264 -> RTP.

    The appsrc's caps (frame size and rate) are set when a media is configured;
    ``config-interval=-1`` repeats SPS/PPS before every key frame so that a
    client joining a shared stream can start decoding at the next key frame.
    """
    return (
        "( appsrc name=src is-live=true format=time do-timestamp=false block=false"
        " ! videoconvert ! video/x-raw,format=I420"
        f" ! {_encoder_chain(s)} ! rtph264pay name=pay0 pt=96 config-interval=-1 aggregate-mode=zero-latency )"
    )
