"""gst-rtsp-servers shared by the outputs of a process: one per host:port, one mount per path.

Several cameras publish on one port (``rtsp://HOST:8554/door``, ``rtsp://HOST:8554/garage``):
each ``rtsp`` output opens a :class:`~framelens.plugins.rtsp.mount.Mount` with
:func:`open_mount`, which starts the port's :class:`RtspServer` for the first one and adds
the path to it for the others; :func:`close_mount` takes the path away again and stops the
server (freeing the port) when its last path goes. Two outputs cannot share a path, and
the outputs of one port must ask for the same credentials (one server has one auth).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from typing import Any

from framelens import ConfigError, OutputError

from .gst import Gst
from .mount import Mount

__all__ = ["RtspServer", "close_mount", "open_mount"]

log = logging.getLogger("framelens.rtsp")

Credentials = tuple[str, str] | None


@dataclass(eq=False)
class _Viewer:
    """One RTSP connection and the path it asked for (``None`` until its DESCRIBE or SETUP)."""

    ip: str
    mount: Mount | None = None


class RtspServer:
    """One gst-rtsp-server listening on ``host:port``, on its own GLib main-loop thread.

    ``start()`` binds the port and raises :class:`OutputError` when it cannot
    (gst-rtsp-server's own ``attach()`` only returns 0); :meth:`add` and :meth:`remove`
    mount and unmount paths while it runs (removing one closes the connections that
    watch it); ``stop()`` closes every connection, tears every media down and frees the
    port. With ``credentials`` (user, password) every path wants them, by Basic or Digest.
    """

    def __init__(self, gst: Gst, *, host: str, port: int, credentials: Credentials = None) -> None:
        self._gst = gst
        self.host, self.port = host, port
        self.credentials = credentials
        self._lock = threading.Lock()
        self._mounts: dict[str, Mount] = {}
        self._viewers: dict[Any, _Viewer] = {}  # by gst-rtsp-server client object
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
        server.connect("client-connected", self._on_client_connected)
        if self.credentials is not None:
            server.set_auth(self._auth())
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

    def _auth(self) -> Any:
        """gst-rtsp-server's auth for the one user: Basic and Digest, as the role every mount lets in."""
        R = self._gst.GstRtspServer
        assert self.credentials is not None
        user, password = self.credentials
        token = R.RTSPToken()
        token.set_string(R.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth = R.RTSPAuth()
        auth.add_basic(R.RTSPAuth.make_basic(user, password), token)
        auth.add_digest(user, password, token)
        _offer_basic_and_digest(auth)
        return auth

    def _permissions(self) -> Any:
        if self.credentials is None:
            return None
        R = self._gst.GstRtspServer
        permissions = R.RTSPPermissions()
        permissions.add_permission_for_role("viewer", R.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("viewer", R.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        return permissions

    def _run(self) -> None:
        self._context.push_thread_default()
        try:
            self._loop.run()
        finally:
            self._context.pop_thread_default()

    def add(self, mount: Mount) -> None:
        """Serve ``mount`` at its path. Raises :class:`ConfigError` when another output has that path."""
        with self._lock:
            other = self._mounts.get(mount.path)
            if other is not None:
                raise ConfigError(f"{mount.owner} and {other.owner} both serve rtsp://{self.host}:{self.port}"
                                  f"{mount.path}; give each its own path (e.g. rtsp://HOST:PORT/{{camera}})")
            self._mounts[mount.path] = mount
        mount.main_context = self._context
        # Mount points have their own lock: adding a path to a running server is safe.
        self._server.get_mount_points().add_factory(mount.path, mount.make_factory(self._permissions()))

    def remove(self, mount: Mount, timeout: float = 5.0) -> None:
        """Stop serving ``mount``: its path answers 404, its viewers are disconnected, its media torn down."""
        if self._thread is None:
            return
        with self._lock:
            if self._mounts.get(mount.path) is not mount:
                return
            del self._mounts[mount.path]
            leaving = set()
            for client, viewer in self._viewers.items():
                if viewer.mount is mount:
                    viewer.mount = None  # no "client-disconnected" from an output that is gone
                    leaving.add(client)
        R = self._gst.GstRtspServer
        done = threading.Event()

        def teardown() -> bool:
            try:
                self._server.get_mount_points().remove_factory(mount.path)
                keep, drop = R.RTSPFilterResult.KEEP, R.RTSPFilterResult.REMOVE
                self._server.client_filter(lambda _s, client, _u: drop if client in leaving else keep, None)
                mount.unprepare()
            except Exception:
                log.exception("rtsp output: removing %s failed", mount.path)
            finally:
                done.set()
            return False

        self._context.invoke_full(self._gst.GLib.PRIORITY_HIGH, teardown)
        if not done.wait(timeout):
            log.warning("rtsp output: %s was not taken down within %.0f s", mount.path, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect clients, unprepare every media, close the listening socket, end the loop."""
        if self._thread is None:
            return
        RtspServer = self._gst.GstRtspServer
        with self._lock:
            mounts = list(self._mounts.values())
            self._mounts.clear()
            for viewer in self._viewers.values():
                viewer.mount = None

        def teardown() -> bool:
            try:
                self._server.client_filter(lambda _s, _c, _u: RtspServer.RTSPFilterResult.REMOVE, None)
                for mount in mounts:
                    self._server.get_mount_points().remove_factory(mount.path)
                    mount.unprepare()
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
            self._viewers.clear()
        self._source = self._server = self._loop = self._context = None
        self._thread = None

    # -- state -----------------------------------------------------------------------------

    @property
    def mounts(self) -> dict[str, Mount]:
        """The paths served now."""
        with self._lock:
            return dict(self._mounts)

    @property
    def clients(self) -> int:
        """RTSP connections open to this port, whatever path they asked for."""
        with self._lock:
            return len(self._viewers)

    # -- callbacks (on gst-rtsp-server's threads) ------------------------------------------

    def _mount_for(self, ctx: Any) -> Mount | None:
        """The mount a request's URL names (``/door`` or ``/door/stream=0``)."""
        try:
            path = str(ctx.uri.abspath or "")
        except (AttributeError, TypeError):
            return None
        with self._lock:
            found = [m for p, m in self._mounts.items() if path == p or path.startswith(p.rstrip("/") + "/")]
        return max(found, key=lambda m: len(m.path)) if found else None

    def _on_client_connected(self, _server: Any, client: Any) -> None:
        viewer = _Viewer(client.get_connection().get_ip())
        with self._lock:
            self._viewers[client] = viewer
        client.connect("describe-request", self._on_request, viewer)
        client.connect("setup-request", self._on_request, viewer)
        client.connect("play-request", self._on_play, viewer)
        client.connect("closed", self._on_client_closed, viewer)

    def _on_request(self, _client: Any, ctx: Any, viewer: _Viewer) -> None:
        # A connection belongs to the path it describes or sets up (the first one it asked for).
        mount = self._mount_for(ctx)
        with self._lock:
            if mount is None or viewer.mount is not None or self._mounts.get(mount.path) is not mount:
                return
            viewer.mount = mount
        mount.client_joined(viewer.ip)

    def _on_play(self, client: Any, ctx: Any, viewer: _Viewer) -> None:
        self._on_request(client, ctx, viewer)
        mount = viewer.mount
        if mount is not None:
            mount.request_key_frame()

    def _on_client_closed(self, client: Any, viewer: _Viewer) -> None:
        with self._lock:
            self._viewers.pop(client, None)
            mount, viewer.mount = viewer.mount, None
        if mount is not None:
            mount.client_left(viewer.ip)


# -- the process's servers --------------------------------------------------------------------

_SERVERS: dict[tuple[str, int], RtspServer] = {}
# Held while a server starts or stops, so a port is never bound twice by this process.
_SERVERS_LOCK = threading.Lock()


def open_mount(gst: Gst, *, host: str, port: int, credentials: Credentials, mount: Mount) -> RtspServer:
    """Serve ``mount`` on ``host:port``: on the process's server for that address, started now if
    there is none. Raises :class:`OutputError` when the port cannot be bound, and
    :class:`ConfigError` when the path is taken or the server asks for other credentials."""
    with _SERVERS_LOCK:
        server = _SERVERS.get((host, port))
        if server is None:
            server = RtspServer(gst, host=host, port=port, credentials=credentials)
            server.start()
            _SERVERS[(host, port)] = server
        elif server.credentials != credentials:
            others = ", ".join(m.owner for m in server.mounts.values())
            raise ConfigError(f"{mount.owner}: rtsp-user / rtsp-api-key differ from those of {others} on the same "
                              f"port {host}:{port}; one RTSP server has one user and key, so give these outputs "
                              "the same ones or another port")
        try:
            server.add(mount)
        except ConfigError:
            if not server.mounts:
                _stop(server)
            raise
        return server


def close_mount(server: RtspServer, mount: Mount) -> None:
    """Stop serving ``mount``; the server stops (and frees its port) when it was its last path."""
    with _SERVERS_LOCK:
        if set(server.mounts) <= {mount.path}:
            _stop(server)
        else:
            server.remove(mount)


def _stop(server: RtspServer) -> None:
    server.stop()
    if _SERVERS.get((server.host, server.port)) is server:
        del _SERVERS[(server.host, server.port)]


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
