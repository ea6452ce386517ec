"""The hooks a framelens plugin can implement.

A plugin is a module (or object) whose functions are decorated with
``@framelens.hookimpl`` and that is listed under the ``framelens`` entry-point
group of its distribution::

    [project.entry-points.framelens]
    myplugin = "myplugin"

Plugins only *register* things. Frames never travel through pluggy: the runtime
builds its stages from the registry in the order the user configured, so the
order of ``-p a -p b`` is the order of processing, whatever order plugins were
loaded in, and the same processor may be configured twice.

The ``register`` callables the collection hooks receive all have this signature::

    register(
        name: str,                       # what users type: -p NAME, -s NAME, -o NAME
        factory: Callable[..., T],       # builds one instance; signature per hook below
        *,
        options: type[Options] = Options,  # typed, documented options (-c NAME-key=value)
        help: str = "",                  # one line for `framelens list`
        schemes: Sequence[str] = (),     # sources/outputs: URL schemes handled ("rtsp")
        claims: Callable[[str], bool] | None = None,  # sources/outputs: accept other locators
    ) -> None

A factory that declares a keyword parameter named ``id`` is also given the
component's id: the name, or ``ID`` for ``-p NAME:ID``. Use it as the key for
published results and shared backends so that two instances stay apart.

Registering a name that another plugin already registered is reported as an
error naming both plugins; nothing is silently shadowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .context import Context
    from .registry import RegisterFn
    from .web import RouteRegister

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("framelens")
hookimpl = pluggy.HookimplMarker("framelens")


# --- components ---------------------------------------------------------------------------


@hookspec
def register_processors(register: RegisterFn) -> None:
    """Register frame processors.

    :param register: call ``register(name, factory, options=..., help=...)`` once per processor.

    ``factory(options, context) -> Processor`` is called once per configured stage
    with that stage's validated options and the run's :class:`~framelens.Context`.
    It must not block or open devices; do that in ``Processor.start()``.
    Return value: ignored.
    """


@hookspec
def register_sources(register: RegisterFn) -> None:
    """Register frame sources.

    :param register: call ``register(name, factory, schemes=..., claims=...)`` once per source.

    ``-s LOCATOR`` picks a source by exact ``name`` (``testpattern``), then by URL
    scheme (``rtsp://...`` -> ``schemes=("rtsp",)``), then by asking each source's
    ``claims(locator)`` predicate (camera indexes, file paths, globs).
    ``factory(locator, options, context) -> Source``. Return value: ignored.
    """


@hookspec
def register_outputs(register: RegisterFn) -> None:
    """Register outputs (sinks for processed frames).

    :param register: call ``register(name, factory, schemes=..., claims=...)`` once per output.

    ``-o TARGET`` is resolved like ``-s``: exact name (``mjpeg``, ``none``), URL
    scheme, then ``claims(target)`` (``out.mp4``).
    ``factory(target, options, context) -> Output``. Return value: ignored.
    """


@hookspec
def register_backends(register: RegisterFn) -> None:
    """Register VLM backends (Ollama, OpenAI-compatible servers, local engines).

    :param register: call ``register(name, factory, options=..., help=...)`` once per backend.

    ``factory(options, context) -> VLMBackend``. Backends are shared by name
    within a run: describers, alerts and the HTTP service that name the same
    backend get the same instance. Return value: ignored.
    """


@hookspec
def register_services(register: RegisterFn) -> None:
    """Register long-running services that live beside the frame loop (an HTTP API).

    :param register: call ``register(name, factory, options=..., help=...)`` once per service.

    ``factory(options, context) -> Service``. Services are enabled with
    ``-p NAME`` like processors, but receive no frames. Return value: ignored.
    """


# --- HTTP service extension -----------------------------------------------------------------


@hookspec
def register_routes(register: RouteRegister, context: Context) -> None:
    """Add HTTP routes to the ``http`` service.

    :param register: a :class:`~framelens.RouteRegister`: call
        ``register(path, endpoint, methods=["GET"], name=None, ...)``; ``endpoint`` is a
        Starlette endpoint (``async def endpoint(request) -> Response``). Optional keywords
        describe the route in ``/openapi.json``: ``request_model`` and ``response_model``
        (pydantic models), ``status_code``, ``summary``, ``tags``; ``public=True`` skips
        the API-key check. A path and method registered twice is an error.
    :param context: the run's context, to reach backends, streams, events and
        :meth:`~framelens.Context.state`.

    Called once when the ``http`` service builds its application, for plugins that
    take part in the run: one with a component configured (``-p alerts`` mounts
    ``/v1/alerts``), or one that registers no components at all. Routes added here
    sit behind the same API-key check, error handling and metrics as the built-in
    ones. Build responses with :func:`~framelens.json_response`, read bodies with
    :func:`~framelens.read_json` and fail with :class:`~framelens.ApiError`.
    Return value: ignored.
    """
