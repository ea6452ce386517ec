"""``GET /v1/grayscale``: what the grayscale processors of this run have seen."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from framelens import ApiError, Context, json_response

from .processor import GrayscaleStats

__all__ = ["grayscale_stats"]


def grayscale_stats(context: Context) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint for ``context``'s run (routes get the context when they are registered)."""

    async def endpoint(request: Request) -> Response:
        """Frames converted and the mean brightness of the last one.

        Served only while ``-p grayscale`` is part of the run.
        """
        stats = context.state("grayscale", GrayscaleStats)
        if stats.frames == 0:
            raise ApiError(409, "no frame has been converted yet; is a source running?", code="no_frames")
        return json_response({"frames": stats.frames, "last_mean": stats.last_mean})

    return endpoint
