"""``POST /infer``: the request and response schema of the llama.cpp Flask vision service.

Clients written for that service (``prompt`` + base64 ``image``) work unchanged;
``image`` may also name a live source (``stream://main``). Errors use that
service's body: ``{"success": false, "error", "error_type", "timestamp", "details"}``
with ``error_type`` ``validation`` (bad request), ``model`` (the backend failed)
or ``system`` (anything else).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, StrictInt
from starlette.requests import Request
from starlette.responses import Response

from framelens import ChatMessage, GenerationParams, ImagePart, TextPart

from .convert import check_supported
from .errors import ApiError
from .gateway import request_id
from .live import is_live_url
from .media import decode_base64_image
from .routing import RouteTable, json_response, read_json
from .schema import MAX_TOKENS, StrictModel
from .state import api_state

__all__ = ["InferRequest", "add_infer_routes"]


class InferRequest(StrictModel):
    prompt: str = Field(min_length=1, description="Text prompt or question about the image")
    image: str = Field(min_length=1, description="Base64 image, with or without a data URL prefix, or stream://ID")
    max_tokens: StrictInt = Field(256, ge=1, le=MAX_TOKENS)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, ge=0, le=1)


def _error_type(status: int) -> str:
    if status in (502, 503, 504) or status == 404:
        return "model"
    if 400 <= status < 500 and status != 429:
        return "validation"
    return "system"


def _error(error: ApiError, rid: str) -> Response:
    return json_response({
        "success": False,
        "error": error.message,
        "error_type": _error_type(error.status),
        "timestamp": datetime.now().isoformat(),
        "details": {"param": error.param, "code": error.code, "request_id": rid},
    }, error.status, headers=error.headers)


async def _image(request: Request, value: str) -> ImagePart:
    api = api_state(request)
    if is_live_url(value):
        return await api.media.image(value, "image")
    mime, data = decode_base64_image(value, max_bytes=api.options.max_image_bytes, param="image")
    return await api.media.checked_image(data, mime, "image")


async def infer(request: Request) -> Response:
    """Describe an image (the llama.cpp vision service's /infer)."""
    try:
        return await _infer(request)
    except ApiError as error:
        return _error(error, request_id(request.scope))


async def _infer(request: Request) -> Response:
    api = api_state(request)
    body = await read_json(request, InferRequest)
    model = api.backend.default_model or await api.backend.discover_default_model()
    if not model:
        raise ApiError(400, f"the {api.backend_name!r} backend has no default model "
                       f"(set -c {api.backend_name}-model=NAME)", param="model")
    explicit = body.model_fields_set
    # The service's defaults apply only where the backend can honour them; values
    # the client sent must be honoured or refused.
    wanted: dict[str, Any] = {"max_tokens": body.max_tokens}
    for name in ("temperature", "top_p"):
        if name in explicit or name in api.backend.supports:
            wanted[name] = getattr(body, name)
    params = GenerationParams(model=model, timeout=api.options.request_timeout, **wanted)
    check_supported(api.backend_name, api.backend, params)
    image = await _image(request, body.image.strip())
    messages = [ChatMessage("user", (TextPart(body.prompt), image))]
    async with api.limiter.slot():
        result = await api.call(request, api.backend.chat(messages, params))
    usage = result.usage
    return json_response({
        "success": True,
        "response_text": result.text,
        "model": result.model or model,
        "timestamp": datetime.now().isoformat(),
        "token_usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.total_tokens},
        "metadata": {**wanted, "backend": api.backend_name,
                     "finish_reason": result.finish_reason, "request_id": request_id(request.scope)},
        "error": None,
    })


def add_infer_routes(routes: RouteTable) -> None:
    routes.register("/infer", infer, methods=["POST"], tags=("compat",), request_model=InferRequest,
                    extra_responses={"415": "Unsupported image type", "422": "Undecodable image",
                                     "502": "Backend failed"})
