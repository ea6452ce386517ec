"""``/v1/streams``: list, open and close live sources; their newest frame; the status page.

Also the Jetson Platform Services spelling (``/api/v1/live-stream``) so its
clients work unchanged. Streams opened with ``-s`` feed the pipeline and
cannot be removed over HTTP.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from framelens import Stream, encode_jpeg

from .errors import ApiError
from .live import is_live_url
from .routing import RouteTable, json_response, read_json
from .schema import StrictModel
from .state import ApiState, api_state

__all__ = ["CreateStream", "add_page_route", "add_stream_routes"]


class CreateStream(StrictModel):
    """Open a live source. ``liveStreamUrl`` is the Jetson service's name for ``url``."""

    url: str | None = Field(None, min_length=1, max_length=1000,
                            description="v4l2:///dev/videoN, csi://N, rtsp://..., or a source name such as testpattern")
    liveStreamUrl: str | None = Field(None, min_length=1, max_length=1000)  # JPS's field name
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field("", max_length=1000)

    @model_validator(mode="after")
    def _one_url(self) -> CreateStream:
        if (self.url is None) == (self.liveStreamUrl is None):
            raise ValueError("give exactly one of url or liveStreamUrl")
        return self


class StreamOut(StrictModel):
    id: str
    object: str
    url: str
    description: str
    origin: str
    state: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int
    dropped: int
    opened_at: float


class StreamList(StrictModel):
    object: str
    data: list[StreamOut]


def stream_json(stream: Stream) -> dict[str, Any]:
    return {**stream.to_dict(), "object": "stream", "opened_at": stream.opened_at}


async def _open(api: ApiState, body: CreateStream) -> tuple[Stream, bool]:
    url = (body.url or body.liveStreamUrl or "").strip()
    param = "url" if body.url is not None else "liveStreamUrl"
    if url.lower().startswith("stream://") or not (
        is_live_url(url) or api.context.registry.find("source", url) is not None
    ):
        raise ApiError(400, f"{url!r} is not a live source URL (v4l2://, csi://, rtsp://) or a source name",
                       param=param, code="invalid_source")
    existing = api.context.streams.find_url(url)
    if existing is not None:
        if body.id is not None and body.id != existing.id:
            # One capture per URL: a second id for it would be a second camera handle.
            raise ApiError(409, f"{url!r} is already open as stream {existing.id!r}; use stream://{existing.id} "
                           f"(or open it without an id), or close {existing.id!r} first to reopen it as "
                           f"{body.id!r}", param="id", code="stream_exists")
        return existing, False
    return await api.live.open(url, param=param, id=body.id, description=body.description), True


async def list_streams(request: Request) -> Response:
    """List the live sources: those opened with -s at start and those opened by requests."""
    streams = api_state(request).context.streams.list()
    return json_response({"object": "list", "data": [stream_json(s) for s in streams]})


async def create_stream(request: Request) -> Response:
    """Open a live source and keep it open (201), or return the one already open for that URL (200).

    A URL that is already open under another id than the requested ``id`` is a 409 naming it.
    """
    api = api_state(request)
    stream, created = await _open(api, await read_json(request, CreateStream))
    return json_response(stream_json(stream), 201 if created else 200)


async def get_stream(request: Request) -> Response:
    """Describe one live source."""
    return json_response(stream_json(api_state(request).live.get(request.path_params["id"])))


async def _remove(api: ApiState, stream_id: str) -> Stream:
    stream = api.live.get(stream_id)
    if stream.origin == "cli":
        raise ApiError(409, f"stream {stream_id!r} was opened with -s and feeds the pipeline; it cannot be removed",
                       code="stream_in_use")
    await asyncio.to_thread(api.context.streams.remove, stream_id)
    return stream


async def delete_stream(request: Request) -> Response:
    """Close a live source opened over HTTP."""
    stream = await _remove(api_state(request), request.path_params["id"])
    return json_response({"id": stream.id, "object": "stream", "deleted": True})


async def stream_frame(request: Request) -> Response:
    """The newest frame of a live source as a JPEG.

    A stream whose camera stopped sending answers 503 with the reason, not an
    old picture; ``?allow_stale=true`` opts in to the last frame anyway, with
    its age in seconds in the ``X-Frame-Age`` header.
    """
    api = api_state(request)
    stream = api.live.get(request.path_params["id"])
    allow = request.query_params.get("allow_stale", "false").lower()
    if allow not in ("true", "false", "1", "0"):
        raise ApiError(400, "allow_stale must be true or false", param="allow_stale", code="invalid_value")
    headers = {"Cache-Control": "no-store"}
    last = stream.capture.latest()
    if allow in ("true", "1") and stream.capture.state != "live" and last is not None:
        frame = last
    else:
        frame = await api.live.newest(stream, None)
    headers["X-Frame-Age"] = f"{max(0.0, stream.capture.frame_age()):.3f}"
    data = await asyncio.to_thread(encode_jpeg, frame.image, 80)
    return Response(data, media_type="image/jpeg", headers=headers)


async def jps_add(request: Request) -> Response:
    """Jetson Platform Services: add a live stream."""
    stream, _ = await _open(api_state(request), await read_json(request, CreateStream))
    return json_response({"id": stream.id})


async def jps_list(request: Request) -> Response:
    """Jetson Platform Services: list live streams."""
    streams = api_state(request).context.streams.list()
    return json_response([{"id": s.id, "liveStreamUrl": stream_json(s)["url"], "description": s.description}
                          for s in streams])


async def jps_remove(request: Request) -> Response:
    """Jetson Platform Services: remove a live stream."""
    await _remove(api_state(request), request.path_params["stream_id"])
    return json_response({"detail": "Stream removed successfully"})


async def page(request: Request) -> Response:
    """A minimal page that shows the live sources and their newest frames."""
    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return HTMLResponse(html)


def add_stream_routes(routes: RouteTable) -> None:
    tags = ("streams",)
    routes.register("/v1/streams", list_streams, tags=tags, response_model=StreamList)
    routes.register("/v1/streams", create_stream, methods=["POST"], tags=tags, request_model=CreateStream,
                    response_model=StreamOut, status_code=201,
                    extra_responses={"403": "Opening sources is turned off", "422": "The source cannot be opened"})
    routes.register("/v1/streams/{id}", get_stream, tags=tags, response_model=StreamOut)
    routes.register("/v1/streams/{id}", delete_stream, methods=["DELETE"], tags=tags,
                    extra_responses={"409": "The stream feeds the pipeline"})
    routes.register("/v1/streams/{id}/frame.jpg", stream_frame, tags=tags, response_types=("image/jpeg",),
                    extra_responses={"503": "The stream is lost, ended or stale (no new frame)"})
    routes.register("/api/v1/live-stream", jps_list, tags=("jetson",))
    routes.register("/api/v1/live-stream", jps_add, methods=["POST"], tags=("jetson",), request_model=CreateStream,
                    extra_responses={"422": "The source cannot be opened"})
    routes.register("/api/v1/live-stream/{stream_id}", jps_remove, methods=["DELETE"], tags=("jetson",))


def add_page_route(routes: RouteTable) -> None:
    """The list of streams at ``/``, unless a plugin (the dashboard) serves a page there."""
    routes.register("/", page, public=True, response_types=("text/html",), include_in_schema=True)
