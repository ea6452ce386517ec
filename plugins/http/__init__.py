"""``http``: an OpenAI-compatible VLM microservice that understands live video.

One local endpoint for n8n, Open WebUI, LangChain and the ``openai`` SDK, in front
of any framelens VLM backend, that also accepts live sources in ``image_url``::

    framelens serve --port 9000 --backend ollama -c ollama-model=llava
    framelens run -s testpattern -p http -c http-backend=ollama -o mjpeg

Endpoints: ``/v1/chat/completions``, ``/v1/models``, ``/v1/streams``, ``/health``,
``/v1/health/ready``, ``/metrics``, ``/openapi.json``, the llama.cpp service's
``/infer``, Ollama's ``/api/chat``, ``/api/generate`` and ``/api/tags``, and a
status page at ``/``. Plugins add routes with the ``register_routes`` hook.
See docs/http.md.
"""

from __future__ import annotations

from framelens import CommandRegister, Context, RegisterService, hookimpl

from .options import HttpOptions
from .service import HttpService

__all__ = ["HttpOptions", "HttpService", "register_commands", "register_services"]


@hookimpl
def register_services(register: RegisterService) -> None:
    def make(options: HttpOptions, context: Context) -> HttpService:
        return HttpService(options, context)

    register("http", make, options=HttpOptions,
             help="OpenAI-compatible VLM API with live sources (/v1/chat/completions, /v1/streams, /infer, /api/chat)")


@hookimpl
def register_commands(cli: CommandRegister) -> None:
    """``framelens serve``."""
    from .command import add_serve_command

    add_serve_command(cli)
