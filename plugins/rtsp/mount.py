"""One path of an RTSP server: its media factory, its prepared pipelines and their frame clocks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .gst import Gst
from .pacing import Pacer

__all__ = ["Media", "Mount"]

log = logging.getLogger("framelens.rtsp")

_SECOND = 1_000_000_000
# Frames allowed to wait in an appsrc before new ones are skipped: enough to ride out
# scheduling jitter, few enough that a slow encoder never builds up latency.
_MAX_QUEUED_FRAMES = 3
# Forced key frames are big: viewers that join within this many seconds share one.
_KEY_FRAME_SPACING = 0.25


@dataclass(eq=False)
class Media:
    """One prepared pipeline (shared by all clients of the mount) and its frame clock."""

    media: Any
    appsrc: Any
    encoder: Any
    size: tuple[int, int]
    pacer: Pacer
    placeholder: bool = False
    pushed: int = 0


class Mount:
    """Serves ``launch`` at ``path`` of an :class:`~framelens.plugins.rtsp.server.RtspServer`.

    The media is shared: every client of the path gets the output of one encoder. Each
    time the media is (re)built for a first client, ``size_for_media()`` picks its frame
    size and ``on_media()`` is called so the caller can push a frame as soon as it plays
    (a live media is not prepared, and the viewer gets no answer, until its first frame
    has gone through the encoder). A client's PLAY forces a key frame so a late joiner
    starts decoding at once. ``on_event(state, payload)`` hears about this path's
    clients coming and going. ``owner`` names the output in error messages.

    The server calls :meth:`make_factory`, :meth:`client_joined`, :meth:`client_left`,
    :meth:`request_key_frame` and :meth:`unprepare` (on its GLib thread); the output
    calls :meth:`medias`, :meth:`running_time`, :meth:`push` and :meth:`resize`.
    """

    def __init__(
        self,
        gst: Gst,
        *,
        path: str,
        launch: str,
        framerate: Fraction,
        size_for_media: Callable[[], tuple[tuple[int, int], bool]],
        on_media: Callable[[], None],
        on_event: Callable[[str, dict[str, Any]], None],
        owner: str,
    ) -> None:
        self._gst = gst
        self.path, self.owner = path, owner
        self._launch = launch
        self._rate = framerate
        self._size_for_media = size_for_media
        self._on_media = on_media
        self._on_event = on_event
        self._lock = threading.Lock()
        self._medias: list[Media] = []
        self._clients = 0
        self._key_frame_pending = False
        self._last_key_frame = 0.0
        self.main_context: Any = None  # the server's GLib context, for key-frame timers

    # -- set up by the server ----------------------------------------------------------------

    def make_factory(self, permissions: Any) -> Any:
        """A shared media factory for this path (``permissions``: the viewer role, or ``None`` without auth)."""
        factory = self._gst.GstRtspServer.RTSPMediaFactory()
        factory.set_launch(self._launch)
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media_configure)
        if permissions is not None:
            factory.set_permissions(permissions)
        return factory

    def unprepare(self) -> None:
        """Tear down every media of this path (on the server's GLib thread)."""
        for m in self.medias():
            m.media.unprepare()
        with self._lock:
            self._medias.clear()

    # -- state -----------------------------------------------------------------------------

    @property
    def clients(self) -> int:
        """RTSP connections currently watching (or asking for) this path."""
        return self._clients

    def medias(self) -> list[Media]:
        with self._lock:
            return list(self._medias)

    # -- feeding ---------------------------------------------------------------------------

    def running_time(self, m: Media) -> int | None:
        """The media pipeline's running time in ns; ``None`` while it is not playing."""
        appsrc = m.appsrc
        # Clock and base time are only consistent once the element is PLAYING: during
        # the change the clock can be set while the base time is still 0, which would
        # make the running time the machine's uptime.
        _, state, pending = appsrc.get_state(0)
        clock = appsrc.get_clock()
        if clock is None or state != self._gst.Gst.State.PLAYING or pending != self._gst.Gst.State.VOID_PENDING:
            return None
        return int(clock.get_time() - appsrc.get_base_time())

    def push(self, m: Media, data: bytes, pts: int) -> str:
        """Queue one frame (``m.size`` BGR bytes) on ``m`` at ``pts`` (running time, ns).

        Returns ``"queued"``, ``"full"`` (the encoder is behind: the frame was not
        queued, so latency does not build up) or ``"closed"`` (the media is going away).
        """
        Gst = self._gst.Gst
        appsrc = m.appsrc
        if appsrc.get_property("current-level-bytes") >= _MAX_QUEUED_FRAMES * len(data):
            return "full"
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = pts
        buf.duration = int(_SECOND / self._rate)
        if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            return "closed"
        m.pushed += 1
        return "queued"

    def resize(self, m: Media, size: tuple[int, int]) -> None:
        """Change the frame size of a running media (the encoder restarts with a key frame)."""
        m.size, m.placeholder = size, False
        self._set_caps(m)
        log.info("rtsp output: stream for %s is now %dx%d", self.path, size[0], size[1])

    # -- callbacks (on gst-rtsp-server's threads) ------------------------------------------

    def _on_media_configure(self, _factory: Any, media: Any) -> None:
        element = media.get_element()
        appsrc = element.get_by_name("src")
        size, placeholder = self._size_for_media()
        entry = Media(media, appsrc, element.get_by_name("enc"), size, Pacer(self._rate), placeholder)
        self._set_caps(entry)
        media.connect("unprepared", self._on_unprepared, entry)
        with self._lock:
            self._medias.append(entry)
        log.info("rtsp output: new stream %dx%d for %s", size[0], size[1], self.path)
        self._on_media()

    def _set_caps(self, m: Media) -> None:
        rate = self._rate
        caps = (f"video/x-raw,format=BGR,width={m.size[0]},height={m.size[1]},"
                f"framerate={rate.numerator}/{rate.denominator}")
        m.appsrc.set_property("caps", self._gst.Gst.Caps.from_string(caps))

    def _on_unprepared(self, _media: Any, entry: Media) -> None:
        with self._lock:
            if entry in self._medias:
                self._medias.remove(entry)
        log.info("rtsp output: stream for %s ended after %d frames", self.path, entry.pushed)

    def client_joined(self, ip: str) -> None:
        with self._lock:
            self._clients += 1
            count = self._clients
        log.info("rtsp output: client %s watches %s (%d open)", ip, self.path, count)
        self._on_event("client-connected", {"client": ip, "clients": count})

    def client_left(self, ip: str) -> None:
        with self._lock:
            self._clients -= 1
            count = self._clients
        log.info("rtsp output: client %s left %s (%d open)", ip, self.path, count)
        self._on_event("client-disconnected", {"client": ip, "clients": count})

    def request_key_frame(self) -> None:
        """A viewer sent PLAY: ask the shared encoder for a key frame (with SPS/PPS) now
        instead of making it wait for the next one. Viewers arriving together share one:
        at most one forced key frame per _KEY_FRAME_SPACING, the next one as soon as that
        has passed."""
        with self._lock:
            if self._key_frame_pending:
                return
            wait = self._last_key_frame + _KEY_FRAME_SPACING - time.monotonic()
            if wait > 0:
                self._key_frame_pending = True
        if wait <= 0 or self.main_context is None:
            self._force_key_frame()
        else:
            timer = self._gst.GLib.timeout_source_new(max(1, int(wait * 1000)))
            timer.set_callback(self._force_key_frame)
            timer.attach(self.main_context)

    def _force_key_frame(self, *_args: Any) -> bool:
        with self._lock:
            self._key_frame_pending = False
            self._last_key_frame = time.monotonic()
        make_event = self._gst.GstVideo.video_event_new_upstream_force_key_unit
        for m in self.medias():
            if m.encoder is not None:
                m.encoder.get_static_pad("src").send_event(make_event(self._gst.Gst.CLOCK_TIME_NONE, True, 0))
        return False  # as a GLib timeout: once
