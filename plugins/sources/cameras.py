"""Sources read through OpenCV: cameras, video files, images, image folders and network streams.

======================  ============  ==========================================================
``-s``                  source        notes
======================  ============  ==========================================================
``0``, ``camera``       ``camera``    camera index; on Linux ``/dev/videoN`` through V4L2
``/dev/video0``         ``camera``    any V4L2 device path (also ``/dev/v4l/by-id/...``)
``v4l2:///dev/video0``  ``camera``    the same, spelled as a URL
``csi://0``             ``csi``       Jetson CSI camera (GStreamer ``nvarguscamerasrc``)
``clip.mp4``            ``video``     a video file (``--realtime`` paces it, ``--loop`` repeats)
``photo.jpg``           ``image``     one image, one frame
``frames/``             ``images``    every image in a folder, in natural order
``'frames/*.png'``      ``images``    a glob, in natural order
``http://cam/video``    ``stream``    MJPEG or other FFmpeg-readable HTTP(S) stream, reconnected
======================  ============  ==========================================================

Cameras and streams are *live*: the runtime reads them on a capture thread, keeps
the newest frame and reconnects with backoff. Files and images are played frame
by frame. Every source that cannot be opened raises :class:`~framelens.SourceError`
at once, naming the source and the reason.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import httpx
from pydantic import field_validator

from framelens import ConfigError, Context, Field, Options, RegisterFn, SourceInfo, redact
from framelens.opencv import (
    FFmpegOptionString,
    FFmpegStreamSource,
    NoFrameError,
    OpenCVSource,
    capture_info,
    has_gstreamer,
)

from .files import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ImageSequenceSource,
    ImageSource,
    StillOptions,
    VideoFileSource,
    is_glob,
    natural_key,
)

__all__ = ["CameraOptions", "CameraSource", "CsiOptions", "GStreamerSource", "NetworkStreamSource", "StreamOptions",
           "csi_pipeline"]

log = logging.getLogger("framelens.sources")

_LOW_LATENCY = {"fflags": "nobuffer", "flags": "low_delay"}


# -- cameras ---------------------------------------------------------------------------------


class CameraOptions(Options):
    width: int | None = Field(None, ge=1, description="Requested frame width (also --width)")
    height: int | None = Field(None, ge=1, description="Requested frame height (also --height)")
    fps: float | None = Field(None, gt=0, description="Requested frame rate (also --fps)")
    format: str | None = Field(None, description="Pixel format to request, as a FOURCC: MJPG, YUYV, H264, ...")
    buffer_size: int = Field(1, ge=0, description="Driver frame buffers; 1 keeps latency low, 0 = driver default")

    @field_validator("format")
    @classmethod
    def _fourcc(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 4 or not value.isascii()):
            raise ValueError("a FOURCC is exactly 4 ASCII characters, e.g. MJPG or YUYV")
        return value


def _video_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"), key=natural_key)


class CameraSource(OpenCVSource):
    """A local camera by index or device path, with capture settings requested from the driver."""

    live = True
    kind = "camera"

    def __init__(self, locator: str, options: CameraOptions) -> None:
        super().__init__(locator)
        self.options = options
        target = locator.removeprefix("v4l2://")
        self.target: int | str = int(target) if target.isdigit() else 0 if target == "camera" else target
        self.v4l2 = sys.platform.startswith("linux") or locator.startswith("v4l2://")

    @property
    def device(self) -> str | None:
        """The device node to check before opening (Linux only)."""
        if isinstance(self.target, str):
            return self.target
        return f"/dev/video{self.target}" if sys.platform.startswith("linux") else None

    def _open_capture(self) -> cv2.VideoCapture:
        device = self.device
        if device is not None and not os.path.exists(device):
            found = _video_devices()
            hint = (f"video devices here: {', '.join(found)}" if found else
                    "there are no /dev/video* devices on this machine (camera unplugged? in a container,"
                    " pass the device through, e.g. docker run --device /dev/video0)")
            where = "" if device == self.locator else f"{device} "
            raise self.error(f"{where}does not exist; {hint}")
        if device is not None and not os.access(device, os.R_OK | os.W_OK):
            raise self.error(f"permission denied on {device}; add your user to the 'video' group")
        cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2 if self.v4l2 else cv2.CAP_ANY)
        if cap.isOpened():
            self._configure(cap)
        return cap

    def _configure(self, cap: cv2.VideoCapture) -> None:
        o = self.options
        # V4L2 negotiates the format first; size and rate are then checked against it.
        if o.format:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*o.format))
        if o.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, o.width)
        if o.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, o.height)
        if o.fps:
            cap.set(cv2.CAP_PROP_FPS, o.fps)
        if o.buffer_size:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, o.buffer_size)
        got = capture_info(cap)
        asked = {"width": o.width, "height": o.height, "fps": o.fps}
        for key, want in asked.items():
            have = getattr(got, key)
            if want and have and abs(have - want) > 0.5:
                log.warning("%s: asked for %s %g, the camera gives %g", self.describe(), key, want, have)

    def _why_not_opened(self) -> str:
        return "the device exists but cannot be opened as a camera (busy in another program, or not a capture node?)"


# -- GStreamer pipelines (Jetson CSI cameras) ------------------------------------------------


class CsiOptions(Options):
    width: int = Field(1280, ge=1, description="Capture width (also --width)")
    height: int = Field(720, ge=1, description="Capture height (also --height)")
    fps: float = Field(30.0, gt=0, description="Capture frame rate (also --fps)")
    flip_method: int = Field(0, ge=0, le=7, description="nvvidconv flip-method: 0 none, 2 rotate 180, 4/6 mirror")


class GStreamerSource(OpenCVSource):
    """A GStreamer pipeline ending in ``appsink``, read through OpenCV's GStreamer backend."""

    live = True

    def __init__(self, locator: str, pipeline: str, *, kind: str = "gstreamer pipeline") -> None:
        super().__init__(locator)
        self.pipeline = pipeline
        self.kind = kind

    def _open_capture(self) -> cv2.VideoCapture:
        if not has_gstreamer():
            raise self.error(
                "this OpenCV build has no GStreamer support (cv2.getBuildInformation() says 'GStreamer: NO'),"
                " and the opencv-python wheels never have it. On a Jetson, use the OpenCV that JetPack ships"
                " (sudo apt install nvidia-opencv python3-opencv) from a venv made with --system-site-packages,"
                " and uninstall opencv-python from it"
            )
        return cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)

    def _why_not_opened(self) -> str:
        return f"GStreamer could not start the pipeline: {self.pipeline}"


def csi_pipeline(sensor: int, o: CsiOptions) -> str:
    """The nvarguscamerasrc pipeline for CSI sensor ``sensor``, delivering BGR."""
    rate = Fraction(o.fps).limit_denominator(1001)
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={o.width},height={o.height},"
            f"framerate={rate.numerator}/{rate.denominator},format=NV12 ! nvvidconv flip-method={o.flip_method}"
            " ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR"
            " ! appsink drop=true max-buffers=1 sync=false")


# -- network streams -------------------------------------------------------------------------


class StreamOptions(Options):
    open_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the stream to open")
    read_timeout: float = Field(5.0, gt=0, description="Seconds without a frame before reconnecting")
    low_latency: bool = Field(True, description="Ask FFmpeg not to buffer (fflags nobuffer, flags low_delay);"
                              " dropped by itself for streams that then do not decode")
    ffmpeg_options: FFmpegOptionString = Field("", description="Extra FFmpeg options as key;value|key;value")



class NetworkStreamSource(FFmpegStreamSource):
    """An HTTP(S) stream (MJPEG, MPEG-TS, HLS, ...) read with FFmpeg; live, so lost streams reconnect."""

    live = True
    kind = "stream"

    def __init__(self, locator: str, options: StreamOptions) -> None:
        super().__init__(locator)
        self.options = options
        self.low_latency = options.low_latency

    def open(self) -> SourceInfo:
        # As for RTSP: OpenCV holds one process-wide lock for every FFmpeg open, so a host that
        # accepts the connection and never answers would stall every other camera's open for its
        # whole timeout. One GET of our own first (headers only, in parallel with other opens)
        # keeps silent hosts and error pages away from that lock.
        ready, reason = self._ask_server(self.options.open_timeout)
        if not ready:
            raise self.error(reason)
        try:
            return super().open()
        except NoFrameError:
            if not self.low_latency:
                raise
        # FFmpeg's no-delay flags break decoding of some streams (H.264 with B-frames):
        # fall back to its defaults, for this open and every reconnect.
        log.warning("%s: no frame decodes in low-latency mode; retrying with FFmpeg's defaults"
                    " (-c stream-low-latency=false skips the first try)", self.describe())
        self.low_latency = False
        return super().open()

    def base_ffmpeg_options(self) -> dict[str, str]:
        return dict(_LOW_LATENCY) if self.low_latency else {}

    def _why_not_opened(self) -> str:
        # OpenCV does not say why; ask the server ourselves to give a useful reason.
        ready, reason = self._ask_server(min(self.options.open_timeout, 3.0))
        return f"the server answered with {reason}, which FFmpeg cannot read as video" if ready else reason

    def _ask_server(self, timeout: float) -> tuple[bool, str]:
        """``(worth opening, reason)`` from one GET (headers only): False with the connection error, the
        silence or the HTTP error status; True with the content type."""
        try:
            with httpx.Client(timeout=timeout, follow_redirects=True) as client, \
                    client.stream("GET", self.locator) as r:
                if r.status_code >= 400:
                    return False, f"the server answered HTTP {r.status_code} {r.reason_phrase}"
                return True, r.headers.get("content-type", "unknown")
        except httpx.ConnectError as exc:
            return False, f"cannot connect ({_root_cause(exc)})"
        except httpx.TimeoutException:
            return False, f"the server did not answer in {timeout:g} s"
        except httpx.HTTPError as exc:
            return False, f"HTTP request failed ({redact(str(exc))})"


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text).lower() or type(exc).__name__

# -- registration ----------------------------------------------------------------------------


def _suffix(locator: str) -> str:
    return Path(locator).suffix.lower()


def _is_camera(locator: str) -> bool:
    return locator.isdigit() or locator.startswith(("/dev/video", "/dev/v4l/"))


def _is_pipeline(locator: str) -> bool:
    return "appsink" in locator and "!" in locator


def _is_video(locator: str) -> bool:
    if is_glob(locator) or _is_camera(locator) or _is_pipeline(locator) or "://" in locator:
        return False
    return _suffix(locator) in VIDEO_EXTENSIONS or (
        os.path.isfile(locator) and _suffix(locator) not in IMAGE_EXTENSIONS
    )


def _is_image(locator: str) -> bool:
    return not is_glob(locator) and "://" not in locator and _suffix(locator) in IMAGE_EXTENSIONS


def _is_image_set(locator: str) -> bool:
    if "://" in locator or _is_pipeline(locator) or _is_camera(locator):
        return False
    return bool(is_glob(locator)) or os.path.isdir(locator)


def register(register: RegisterFn) -> None:
    def camera(locator: str, options: CameraOptions, context: Context) -> CameraSource:
        return CameraSource(locator, options)

    def csi(locator: str, options: CsiOptions, context: Context) -> GStreamerSource:
        sensor = locator.removeprefix("csi://").strip("/") or "0"
        if not sensor.isdigit():
            raise ConfigError(f"-s {locator}: expected csi://N with N the sensor id, e.g. csi://0")
        return GStreamerSource(locator, csi_pipeline(int(sensor), options), kind="csi camera")

    def stream(locator: str, options: StreamOptions, context: Context) -> NetworkStreamSource:
        if not locator.lower().startswith(("http://", "https://")):
            raise ConfigError(f"-s {locator}: expected an http:// or https:// URL")
        return NetworkStreamSource(locator, options)

    register("camera", camera, options=CameraOptions, schemes=("v4l2",), claims=_is_camera,
             help="local camera: 0, /dev/video0, v4l2:///dev/video0 (V4L2 on Linux)")
    register("csi", csi, options=CsiOptions, schemes=("csi",),
             help="Jetson CSI camera: csi://0 (needs OpenCV with GStreamer)")
    register("gstreamer", lambda loc, _o, _c: GStreamerSource(loc, loc), claims=_is_pipeline,
             help="a GStreamer pipeline ending in appsink (needs OpenCV with GStreamer)")
    register("video", lambda loc, _o, _c: VideoFileSource(loc), claims=_is_video,
             help="a video file: clip.mp4 (use --realtime to pace it, --loop to repeat)")
    register("image", lambda loc, o, _c: ImageSource(loc, o), options=StillOptions, claims=_is_image,
             help="a single image: photo.jpg (one frame)")
    register("images", lambda loc, o, _c: ImageSequenceSource(loc, o), options=StillOptions, claims=_is_image_set,
             help="a folder of images or a glob: frames/ or 'frames/*.png' (natural order)")
    register("stream", stream, options=StreamOptions,
             schemes=("http", "https"), help="an HTTP(S) video stream (MJPEG, MPEG-TS, HLS) via FFmpeg; reconnects")
