"""The dashboard's routes on the ``http`` service (see docs/dashboard.md).

``/`` and the page's files are public: they hold no data, and the page asks for
the API key itself when the API refuses it. Everything that carries data
(``/v1/events``, live views, snapshots, status) sits behind the service's key
check, which also accepts the session cookie that ``/dashboard/api/login`` sets.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
from collections.abc import Awaitable, Callable
from importlib import resources

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from framelens import ApiError, Context, RouteRegister, json_response, read_json
from framelens.web import SESSION_COOKIE, cookie_value, sessions_of

from .errors_log import RecentErrors
from .events import EventFilter, EventHub
from .options import DashboardOptions
from .status import StatusReport
from .video import BOUNDARY, VideoFeeds

__all__ = ["add_dashboard_routes"]

log = logging.getLogger("framelens.dashboard")

STATIC = ("index.html", "app.js", "api.js", "panels.js", "alerts.js", "chat.js", "style.css", "icon.svg")
_NO_CACHE = {"Cache-Control": "no-cache"}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _NoFields(BaseModel):
    """The body of login and logout: nothing, or ``{}``."""

    model_config = ConfigDict(extra="forbid")


async def _no_body(request: Request) -> None:
    """A body is optional, but one that is there must be ``{}`` (a 400 otherwise, as on every POST)."""
    if (await request.body()).strip():
        await read_json(request, _NoFields)


def _split(value: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (value or "").split(",") if p.strip())


def add_dashboard_routes(register: RouteRegister, context: Context, options: DashboardOptions) -> None:
    """Mount the page, its files, ``/v1/events``, live views, snapshots, status and login."""
    hub = EventHub(context, history=options.history, client_queue=options.client_queue)
    hub.attach()
    feeds = VideoFeeds(max_fps=options.max_fps, quality=options.quality, max_side=options.max_side)
    errors = RecentErrors()
    errors.attach()
    status = StatusReport(context, hub, feeds, errors)
    sessions = sessions_of(context)

    def shutdown() -> None:
        errors.detach()
        feeds.stop()
        hub.detach()

    context.on_close(shutdown)
    files = {name: _static(name) for name in STATIC}

    def file_endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
        media = _TYPES.get(os.path.splitext(name)[1]) or mimetypes.guess_type(name)[0] or "application/octet-stream"

        async def serve_file(request: Request) -> Response:
            return Response(files[name], media_type=media, headers=_NO_CACHE)

        serve_file.__doc__ = f"The dashboard's {name}."
        return serve_file

    async def page(request: Request) -> Response:
        """The dashboard: live video, descriptions, alerts, chat and status (see docs/dashboard.md)."""
        return Response(files["index.html"], media_type="text/html", headers=_NO_CACHE)

    async def events(request: Request) -> Response:
        """Every event of the run as Server-Sent Events; ``?type=a,b`` and ``?stream=ID`` filter.

        Reconnect with ``Last-Event-ID`` (or ``?last_event_id=N``) to get the events missed
        meanwhile; ``?last_event_id=0`` replays every event still kept."""
        raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        last: int | None = None
        if raw is not None and raw != "":
            try:
                last = int(raw)
            except ValueError:
                raise ApiError(400, f"last_event_id must be a whole number, got {raw!r}", param="last_event_id",
                               code="invalid_value") from None
        wanted = EventFilter(_split(request.query_params.get("type")), _split(request.query_params.get("stream")))
        return StreamingResponse(hub.stream(wanted, last), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def live_view(request: Request) -> Response:
        """A stream's live video as MJPEG (multipart/x-mixed-replace), at most ``dashboard-max-fps``."""
        stream_id = request.path_params["id"]
        try:
            stream = context.streams.get(stream_id)
        except KeyError:
            known = ", ".join(s.id for s in context.streams.list()) or "none"
            raise ApiError(404, f"no stream {stream_id!r} (open streams: {known})", param="id",
                           code="stream_not_found") from None
        feed = feeds.feed(stream)
        return StreamingResponse(feed.parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"})

    async def snapshot(request: Request) -> Response:
        """The JPEG an alert saved when it changed state (only files named by an ``alert`` event)."""
        name = request.path_params["name"]
        path = hub.snapshot_paths.get(name)
        if path is None:
            raise ApiError(404, f"no alert snapshot called {name!r} in this run", param="name",
                           code="snapshot_not_found")
        try:
            data = await asyncio.to_thread(lambda: open(path, "rb").read())
        except OSError as exc:
            raise ApiError(404, f"alert snapshot {name!r} is gone ({exc.strerror}); alerts-snapshot-keep"
                           " removes the oldest", code="snapshot_not_found") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    async def status_doc(request: Request) -> Response:
        """Backend, model, health, requests in flight, streams and recent errors."""
        return json_response(await status.build())

    async def login(request: Request) -> Response:
        """Trade the API key (``Authorization: Bearer KEY``, checked by the service) for a session cookie."""
        await _no_body(request)
        token = sessions.issue()
        secure = "; Secure" if request.url.scheme == "https" else ""
        cookie = f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(sessions.ttl)}{secure}"
        return json_response({"ok": True, "expires_in": int(sessions.ttl)}, headers={"Set-Cookie": cookie})

    async def session(request: Request) -> Response:
        """Whether the service wants a key and whether this browser's session is good (no data)."""
        # The key may also come from a deployment file's stage options, which only the http
        # service sees; then this says False and the page learns it from its first 401.
        configured = context.namespace_options("http").get("api-key") or os.environ.get("FRAMELENS_API_KEY")
        return json_response({"auth_required": bool(configured),
                              "session": sessions.valid(cookie_value(request.headers.get("cookie", "")))})

    async def logout(request: Request) -> Response:
        """End the browser's session and clear its cookie."""
        await _no_body(request)
        sessions.revoke(cookie_value(request.headers.get("cookie", "")))
        cookie = f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        return json_response({"ok": True}, headers={"Set-Cookie": cookie})

    tags = ("dashboard",)
    register("/", page, public=True, response_types=("text/html",), tags=tags)
    for name in STATIC:
        if name != "index.html":
            register(f"/dashboard/{name}", file_endpoint(name), public=True, include_in_schema=False)
    register("/v1/events", events, response_types=("text/event-stream",), tags=("events",))
    register("/dashboard/api/status", status_doc, tags=tags)
    register("/dashboard/api/streams/{id}/mjpeg", live_view, tags=tags,
             response_types=(f"multipart/x-mixed-replace; boundary={BOUNDARY}",),
             extra_responses={"404": "No such stream"})
    register("/dashboard/api/snapshots/{name}", snapshot, tags=tags, response_types=("image/jpeg",),
             extra_responses={"404": "No such snapshot"})
    register("/dashboard/api/login", login, methods=["POST"], tags=tags)
    register("/dashboard/api/logout", logout, methods=["POST"], public=True, tags=tags)
    register("/dashboard/api/session", session, public=True, tags=tags)
