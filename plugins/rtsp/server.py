"""One gst-rtsp-server mount, driven from Python on its own GLib main-loop thread."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from framelens import OutputError

from .gst import Gst
from .pacing import Pacer

__all__ = ["Media", "RtspServer"]

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


class RtspServer:
    """Serves ``launch`` at ``rtsp://host:port/path`` with gst-rtsp-server.

    The media is shared: every client gets the output of one encoder. Each time
    the media is (re)built for a first client, ``size_for_media()`` picks its
    frame size and ``on_media()`` is called so the caller can push a frame as soon
    as it plays (a live media is not prepared, and the viewer gets no answer,
    until its first frame has gone through the encoder).
    A client's PLAY forces a key frame so a late joiner starts decoding at once.
    ``on_event(state, payload)`` hears about clients coming and going.

    ``start()`` binds the port and raises :class:`OutputError` when it cannot
    (gst-rtsp-server's own ``attach()`` only returns 0); ``stop()`` closes every
    client connection, tears the media down and frees the port.
    """

    def __init__(
        self,
        gst: Gst,
        *,
        host: str,
        port: int,
        path: str,
        launch: str,
        framerate: Fraction,
        size_for_media: Callable[[], tuple[tuple[int, int], bool]],
        on_media: Callable[[], None],
        on_event: Callable[[str, dict[str, Any]], None],
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self._gst = gst
        self._credentials = credentials
        self.host, self.port, self.path = host, port, path
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
        self._context: Any = None
        self._loop: Any = None
        self._server: Any = None
        self._source: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        GLib, RtspServer = self._gst.GLib, self._gst.GstRtspServer
        server = RtspServer.RTSPServer()
        server.set_address(self.host)
        server.set_service(str(self.port))
        factory = RtspServer.RTSPMediaFactory()
        factory.set_launch(self._launch)
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media_configure)
        server.connect("client-connected", self._on_client_connected)
        if self._credentials is not None:
            server.set_auth(self._auth(factory))
        server.get_mount_points().add_factory(self.path, factory)
        try:
            # create_source binds and listens here, so a busy port fails now with the
            # real reason, unlike attach() which only returns 0.
            source = server.create_source(None)
        except GLib.Error as exc:
            raise OutputError(f"rtsp output: cannot listen on {self.host}:{self.port}: {exc.message}") from None
        self._context = GLib.MainContext.new()
        self._loop = GLib.MainLoop.new(self._context, False)
        source.attach(self._context)
        self._server, self._source = server, source
        self._thread = threading.Thread(target=self._run, name=f"rtsp-{self.port}", daemon=True)
        self._thread.start()

    def _auth(self, factory: Any) -> Any:
        """gst-rtsp-server's auth for the one user: Basic and Digest, and the mount only for that role."""
        R = self._gst.GstRtspServer
        assert self._credentials is not None
        user, password = self._credentials
        token = R.RTSPToken()
        token.set_string(R.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth = R.RTSPAuth()
        auth.add_basic(R.RTSPAuth.make_basic(user, password), token)
        auth.add_digest(user, password, token)
        _offer_basic_and_digest(auth)
        permissions = R.RTSPPermissions()
        permissions.add_permission_for_role("viewer", R.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("viewer", R.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
        return auth

    def _run(self) -> None:
        self._context.push_thread_default()
        try:
            self._loop.run()
        finally:
            self._context.pop_thread_default()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect clients, unprepare the media, close the listening socket, end the loop."""
        if self._thread is None:
            return
        RtspServer = self._gst.GstRtspServer

        def teardown() -> bool:
            try:
                self._server.client_filter(lambda _s, _c, _u: RtspServer.RTSPFilterResult.REMOVE, None)
                self._server.get_mount_points().remove_factory(self.path)
                for m in self.medias():
                    m.media.unprepare()
                self._source.destroy()
            except Exception:
                log.exception("rtsp output: tearing down the server failed")
            finally:
                self._loop.quit()
            return False

        self._context.invoke_full(self._gst.GLib.PRIORITY_HIGH, teardown)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("rtsp output: the GLib loop did not stop within %.0f s", timeout)
        # The listening socket belongs to the source: dropping the last reference closes it.
        with self._lock:
            self._medias.clear()
        self._source = self._server = self._loop = self._context = None
        self._thread = None

    # -- state -----------------------------------------------------------------------------

    @property
    def clients(self) -> int:
        """RTSP connections currently open."""
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

    def resize(self, m: Media, size: tuple[int, int]) -> None:
        """Change the frame size of a running media (the encoder restarts with a key frame)."""
        m.size, m.placeholder = size, False
        self._set_caps(m)
        log.info("rtsp output: stream for %s is now %dx%d", self.path, size[0], size[1])

    def _on_unprepared(self, _media: Any, entry: Media) -> None:
        with self._lock:
            if entry in self._medias:
                self._medias.remove(entry)
        log.info("rtsp output: stream for %s ended after %d frames", self.path, entry.pushed)

    def _on_client_connected(self, _server: Any, client: Any) -> None:
        ip = client.get_connection().get_ip()
        with self._lock:
            self._clients += 1
            count = self._clients
        client.connect("play-request", self._on_play)
        client.connect("closed", self._on_client_closed, ip)
        log.info("rtsp output: client %s connected (%d open)", ip, count)
        self._on_event("client-connected", {"client": ip, "clients": count})

    def _on_client_closed(self, _client: Any, ip: str) -> None:
        with self._lock:
            self._clients -= 1
            count = self._clients
        log.info("rtsp output: client %s disconnected (%d open)", ip, count)
        self._on_event("client-disconnected", {"client": ip, "clients": count})

    def _on_play(self, _client: Any, _ctx: Any) -> None:
        # The shared encoder may be anywhere in its GOP: ask for a key frame (with
        # SPS/PPS) now instead of making the new viewer wait for the next one. Viewers
        # arriving together share one: at most one forced key frame per
        # _KEY_FRAME_SPACING, the next one as soon as that has passed.
        with self._lock:
            if self._key_frame_pending:
                return
            wait = self._last_key_frame + _KEY_FRAME_SPACING - time.monotonic()
            if wait > 0:
                self._key_frame_pending = True
        if wait <= 0:
            self._force_key_frame()
        else:
            timer = self._gst.GLib.timeout_source_new(max(1, int(wait * 1000)))
            timer.set_callback(self._force_key_frame)
            timer.attach(self._context)

    def _force_key_frame(self, *_args: Any) -> bool:
        with self._lock:
            self._key_frame_pending = False
            self._last_key_frame = time.monotonic()
        make_event = self._gst.GstVideo.video_event_new_upstream_force_key_unit
        for m in self.medias():
            if m.encoder is not None:
                m.encoder.get_static_pad("src").send_event(make_event(self._gst.Gst.CLOCK_TIME_NONE, True, 0))
        return False  # as a GLib timeout: once


def _offer_basic_and_digest(auth: Any) -> None:
    """Challenge with both Basic and Digest (the default offers Basic only).

    The introspected binding types the argument as a single enum value, so the
    flag combination is passed through the C call itself. Should that fail,
    Digest alone is offered: every RTSP client speaks it, and Basic credentials
    sent up front are accepted either way.
    """
    try:
        lib = ctypes.CDLL("libgstrtspserver-1.0.so.0")
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        lib.gst_rtsp_auth_set_supported_methods.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.gst_rtsp_auth_set_supported_methods(get_pointer(auth.__gpointer__, None), 1 | 2)
    except (OSError, AttributeError, ValueError) as exc:
        log.debug("rtsp output: offering Digest only (%s)", exc)
        from gi.repository import GstRtsp
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
