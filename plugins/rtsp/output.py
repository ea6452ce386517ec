"""The ``rtsp`` output: processed frames as an H.264 RTSP stream any player can open."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import model_validator

from framelens import ConfigError, Context, Field, Frame, Options, Output, OutputError

from .gst import EncoderSettings, check_elements, choose_encoder, load_gst, media_launch
from .mount import Mount
from .server import RtspServer, close_mount, open_mount

__all__ = ["DEFAULT_URL", "RtspOutput", "RtspOutputOptions", "RtspUrl", "letterbox", "parse_output_url"]

log = logging.getLogger("framelens.rtsp")

DEFAULT_URL = "rtsp://127.0.0.1:5011/out"
# Size of the placeholder stream when a viewer connects before the first frame and
# no size is configured.
PLACEHOLDER_SIZE = (1280, 720)


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Counter, Counter]] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def _metrics(registry: CollectorRegistry) -> tuple[Gauge, Counter, Counter]:
    # One set per registry: a run with two rtsp outputs must not register the names twice.
    with _METRICS_LOCK:
        if registry not in _METRICS:
            _METRICS[registry] = (
                Gauge("framelens_rtsp_clients", "RTSP connections watching the path", ["port", "path"],
                      registry=registry),
                Counter("framelens_rtsp_frames_sent", "Frames given to the RTSP encoder (repeats included)",
                        ["port", "path"], registry=registry),
                Counter("framelens_rtsp_frames_skipped", "Frames not sent because the encoder was behind",
                        ["port", "path"], registry=registry),
            )
        return _METRICS[registry]


class RtspOutputOptions(Options):
    width: int | None = Field(None, ge=16, le=7680, description="Stream width in pixels (even); frames are "
                              "scaled to fit, keeping their aspect ratio (default: the frames' own size)")
    height: int | None = Field(None, ge=16, le=4320, description="Stream height in pixels (even); set with width")
    fps: float = Field(30.0, gt=0, le=240, description="Stream frame rate: the newest frame is sent at this rate, "
                       "repeated when no new one came")
    bitrate: int = Field(4000, ge=100, le=200_000, description="Target bitrate in kbit/s")
    keyframe_interval: int | None = Field(None, ge=1, le=10_000, description="Frames between key frames "
                                          "(default: one per second); new viewers get one at once anyway")
    encoder: Literal["auto", "x264enc", "openh264enc", "nvv4l2h264enc"] = Field(
        "auto", description="H.264 encoder: auto picks nvv4l2h264enc on Jetson, else x264enc, else openh264enc")
    user: str = Field("framelens", min_length=1, max_length=64, pattern=r"^[^:@/\s]+$",
                      description="User name viewers give when the output has an API key")
    api_key: str | None = Field(None, description="Password viewers must give (RTSP Basic or Digest auth, user"
                                " rtsp-user); default: -c http-api-key, else $FRAMELENS_API_KEY, else none")
    stale_after: float = Field(5.0, ge=0, description="Seconds without a new frame before the repeated frame "
                               "gets a 'no new video' banner (0: never)")

    @model_validator(mode="after")
    def _check_size(self) -> RtspOutputOptions:
        if (self.width is None) != (self.height is None):
            raise ValueError("set both rtsp-width and rtsp-height, or neither to keep the frames' size")
        for name, value in (("width", self.width), ("height", self.height)):
            if value is not None and value % 2:
                raise ValueError(f"{name} {value} must be even (H.264 4:2:0 needs even sizes)")
        return self


@dataclass(frozen=True)
class RtspUrl:
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        return f"rtsp://{self.host}:{self.port}{self.path}"


def parse_output_url(target: str) -> RtspUrl:
    """``rtsp`` -> the default; ``rtsp://HOST[:PORT][/PATH]`` -> its parts (port 554 and
    path ``/out`` when left out). Raises :class:`ConfigError` for anything else."""
    if target == "rtsp":
        target = DEFAULT_URL
    where = f"-o {target}"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme.lower() != "rtsp":
        raise ConfigError(f"{where}: expected rtsp or rtsp://HOST:PORT/PATH")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: the rtsp output does not support credentials in the URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: unexpected query or fragment; use -c rtsp-OPTION=VALUE for options")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}: invalid port (expected 1-65535)") from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"{where}: no host; use 0.0.0.0 to serve on every interface")
    path = parts.path.rstrip("/") or "/out"
    if any(c in path for c in " \t\r\n"):
        raise ConfigError(f"{where}: the path must not contain whitespace")
    return RtspUrl(host, port or 554, path)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (width, height) with black bars, keeping its aspect ratio."""
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interpolation)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    canvas[y : y + nh, x : x + nw] = resized
    return canvas


def _banner(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, h / 720)
    band = int(44 * scale)
    out[:band] = (out[:band] * 0.3).astype(np.uint8)
    cv2.putText(out, text, (int(12 * scale), int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(2 * scale)), cv2.LINE_AA)
    return out


class RtspOutput(Output):
    """Serves the processed frames at ``rtsp://host:port/path`` through gst-rtsp-server.

    ``write`` only keeps the newest frame; a feeder thread sends it at ``fps`` to
    the shared encoder, repeating it when nothing new came so players never time
    out (after ``stale-after`` seconds with a banner saying since when; a
    placeholder before the first frame). Nothing is encoded while no one watches.

    Outputs of one process with the same host and port share one server, each on its
    own path (see :mod:`~framelens.plugins.rtsp.server`). ``id`` names the output in
    error messages.
    """

    def __init__(self, url: RtspUrl, options: RtspOutputOptions, context: Context, id: str = "rtsp") -> None:
        self.url = url
        self.options = options
        self.context = context
        self.id = id
        self.owner = f"rtsp output {id} ({url})"
        self._server: RtspServer | None = None
        self._mount: Mount | None = None
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._latest_seq = 0
        self._latest_ns = 0
        self._spacing: int | None = None  # ns between the two newest frames' arrivals
        self._media_waiting = False
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._cache_key: tuple[Any, ...] | None = None
        self._cache: bytes = b""
        labels = (str(url.port), url.path)
        clients, sent, skipped = _metrics(context.metrics)
        self._m_clients, self._m_sent = clients.labels(*labels), sent.labels(*labels)
        self._m_skipped = skipped.labels(*labels)
        self.sent = 0
        self.skipped = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        gst = load_gst()
        check_elements(gst)
        o = self.options
        encoder = choose_encoder(gst, o.encoder)
        keyint = o.keyframe_interval or max(1, round(o.fps))
        settings = EncoderSettings(encoder, o.fps, o.bitrate, keyint)
        launch = media_launch(settings)
        try:
            # Parse once now: a bad property or element fails at start, not when the
            # first viewer connects (gst-rtsp-server would only answer 503 then).
            gst.Gst.parse_launch(launch).set_state(gst.Gst.State.NULL)
        except gst.GLib.Error as exc:
            raise OutputError(f"rtsp output: the {encoder} pipeline does not build: {exc.message}") from None
        key = _shared_api_key(o.api_key, self.context)
        if key is None and not (self.url.host in ("localhost", "::1") or self.url.host.startswith("127.")):
            _warn_once(f"rtsp output: serving video on {self.url.host} to anyone who can reach it (no API key;"
                       " set -c rtsp-api-key or -c http-api-key)")
        mount = Mount(gst, path=self.url.path, launch=launch, framerate=settings.framerate,
                      size_for_media=self._size_for_media, on_media=self._wake, on_event=self._publish,
                      owner=self.owner)
        self._server = open_mount(gst, host=self.url.host, port=self.url.port,
                                  credentials=(o.user, key) if key else None, mount=mount)
        self._mount = mount
        self._feeder = threading.Thread(target=self._feed, name=f"rtsp-feed-{self.url.port}{self.url.path}",
                                        daemon=True)
        self._feeder.start()
        log.info("rtsp output: serving %s (%s, %g fps, %d kbit/s, key frame every %d frames)",
                 self.url, encoder, o.fps, o.bitrate, keyint)
        self._publish("serving", {"encoder": encoder})

    def write(self, frame: Frame) -> None:
        now = time.monotonic_ns()
        with self._cond:
            self._spacing = now - self._latest_ns if self._latest is not None else None
            self._latest = frame
            self._latest_seq += 1
            self._latest_ns = now
            self._cond.notify_all()

    def close(self) -> None:
        # The path goes first, while the feeder still runs: a viewer whose media is being
        # prepared at this moment gets its first frame (or the teardown) instead of waiting
        # for ever on a media nobody feeds.
        server, mount = self._server, self._mount
        self._server = self._mount = None
        if server is not None and mount is not None:
            close_mount(server, mount)
        self._stop.set()
        self._wake()
        if self._feeder is not None:
            self._feeder.join(5)
            self._feeder = None
        if mount is not None:
            self._m_clients.set(0)
            self._publish("stopped", {"sent": self.sent, "skipped": self.skipped})

    @property
    def clients(self) -> int:
        """RTSP connections currently watching this output's path."""
        return self._mount.clients if self._mount is not None else 0

    # -- helpers ---------------------------------------------------------------------------

    def _publish(self, state: str, payload: dict[str, Any]) -> None:
        if "clients" in payload:
            self._m_clients.set(payload["clients"])
        self.context.events.publish("output", {"output": "rtsp", "state": state, "url": str(self.url), **payload})

    def _wake(self) -> None:
        with self._cond:
            self._media_waiting = True
            self._cond.notify_all()

    def _size_for_media(self) -> tuple[tuple[int, int], bool]:
        """The frame size for a new media, and whether it is only a placeholder's size."""
        o = self.options
        if o.width is not None and o.height is not None:
            return (o.width, o.height), False
        frame = self._latest
        if frame is None:
            return PLACEHOLDER_SIZE, True
        h, w = frame.image.shape[:2]
        return (max(2, w - w % 2), max(2, h - h % 2)), False

    def _render(self, size: tuple[int, int]) -> bytes:
        """The BGR bytes to send for a media of ``size``; cached while nothing changes."""
        with self._cond:
            frame, seq, at_ns = self._latest, self._latest_seq, self._latest_ns
        stale_after = self.options.stale_after
        stale = frame is not None and stale_after > 0 and (time.monotonic_ns() - at_ns) / 1e9 > stale_after
        key = (seq, size, stale)
        if key == self._cache_key:
            return self._cache
        if frame is None:
            image = _banner(np.full((size[1], size[0], 3), 32, np.uint8), "framelens: waiting for video")
        else:
            image = letterbox(frame.image, size)
            if stale:
                since = time.strftime("%H:%M:%S", time.localtime(frame.timestamp))
                image = _banner(image, f"no new video since {since}")
        self._cache_key, self._cache = key, np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        return self._cache

    def _feed(self) -> None:
        """Send frames to every prepared media as its :class:`Pacer` says (the frame rate)."""
        mount = self._mount
        assert mount is not None
        failures = 0
        while not self._stop.is_set():
            with self._cond:
                seq, spacing = self._latest_seq, self._spacing
                self._media_waiting = False
            wake_in = 1.0 / self.options.fps
            for m in mount.medias():
                try:
                    if m.placeholder and self._latest is not None:
                        # A viewer came before the first frame: switch to the frames' own size.
                        size, placeholder = self._size_for_media()
                        if not placeholder and size != m.size:
                            mount.resize(m, size)
                    running = mount.running_time(m)
                    if running is None:
                        # The media is being prepared; it plays (and has a clock) within ms.
                        wake_in = min(wake_in, 0.005)
                        continue
                    plan = m.pacer.plan(running, seq, spacing)
                    if plan.n is not None:
                        result = mount.push(m, self._render(m.size), plan.pts)
                        if result == "queued":
                            m.pacer.sent(plan, seq)
                            self.sent += 1
                            self._m_sent.inc()
                        elif result == "full":
                            m.pacer.skipped(plan)
                            self.skipped += 1
                            self._m_skipped.inc()
                    wake_in = min(wake_in, plan.wait_s)
                except Exception:
                    # Never let one bad frame end the stream; say so once, not at frame rate.
                    failures += 1
                    if failures == 1:
                        log.exception("rtsp output: sending a frame failed")
            with self._cond:
                if self._latest_seq == seq and not self._media_waiting and not self._stop.is_set():
                    self._cond.wait(max(wake_in, 0.001))


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _shared_api_key(own: str | None, context: Context) -> str | None:
    """The output's own key, else the ``http`` service's key, else ``$FRAMELENS_API_KEY``."""
    if own:
        return own
    http = context.namespace_options("http")
    value = http.get("api_key", http.get("api-key"))
    return str(value) if value else os.environ.get("FRAMELENS_API_KEY") or None


def _claim(url: RtspUrl, owner: str, credentials: tuple[str, str | None], context: Context) -> None:
    """Check, while the run is built, that no other output of it has this path or other
    credentials on this port (the process-wide server checks again at start)."""
    claims: dict[tuple[str, int], dict[str, tuple[str, tuple[str, str | None]]]] = context.state(
        "framelens.rtsp.claims", dict)
    port = claims.setdefault((url.host, url.port), {})
    if url.path in port:
        raise ConfigError(f"{owner} and {port[url.path][0]} both serve {url}; give each its own path "
                          "(e.g. rtsp://HOST:PORT/{camera})")
    for other, theirs in port.values():
        if theirs != credentials:
            raise ConfigError(f"{owner}: rtsp-user / rtsp-api-key differ from those of {other} on the same port "
                              f"{url.host}:{url.port}; one RTSP server has one user and key, so give these outputs "
                              "the same ones or another port")
    port[url.path] = (owner, credentials)


def make_output(target: str, options: RtspOutputOptions, context: Context, id: str = "rtsp") -> RtspOutput:
    """Factory registered as the ``rtsp`` output."""
    output = RtspOutput(parse_output_url(target), options, context, id)
    key = _shared_api_key(options.api_key, context)
    _claim(output.url, output.owner, (options.user, key) if key else ("", None), context)
    return output
