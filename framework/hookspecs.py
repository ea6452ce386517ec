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

The ``register`` callables the collection hooks receive all have this signature
(typed per kind as :class:`~framelens.RegisterProcessor`, :class:`~framelens.RegisterSource`,
:class:`~framelens.RegisterOutput`, :class:`~framelens.RegisterBackend` and
:class:`~framelens.RegisterService`; :class:`~framelens.RegisterFn` is the untyped union)::

    register(
        name: str,                       # what users type: -p NAME, -s NAME, -o NAME
        factory: Callable[..., T],       # builds one instance; signature per hook below
        *,
        options: type[Options] = Options,  # typed, documented options (-c NAME-key=value)
        help: str = "",                  # one line for `framelens list`
        schemes: Sequence[str] = (),     # sources/outputs: URL schemes handled ("rtsp")
        claims: Callable[[str], bool] | None = None,  # sources/outputs: accept other locators
    ) -> None

Factory signatures, per kind (``T`` is what the factory must return; the runtime
checks it and reports a factory that returns anything else as a configuration error):

=========  ============================================  ============
kind       factory                                       returns
=========  ============================================  ============
processor  ``factory(options, context)``                 ``Processor``
source     ``factory(locator, options, context)``        ``Source``
output     ``factory(target, options, context)``         ``Output``
backend    ``factory(options, context)``                 ``VLMBackend``
service    ``factory(options, context)``                 ``Service``
=========  ============================================  ============

A factory of any kind that declares a keyword parameter named ``id`` is also
given the component's id: for processors, services and outputs the name, or
``ID`` for ``-p NAME:ID``; for a source its name; for a backend the name it is
shared under (``context.backend("cam2", type="ollama")`` -> ``"cam2"``). Use it as
the key for published results and shared state so that two instances stay apart.

Registering a name that another plugin already registered is reported as an
error naming both plugins; nothing is silently shadowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .context import Context
    from .registry import (
        CommandRegister,
        RegisterBackend,
        RegisterOutput,
        RegisterPluginOptions,
        RegisterProcessor,
        RegisterService,
        RegisterSource,
    )
    from .web import RouteRegister

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("framelens")
hookimpl = pluggy.HookimplMarker("framelens")


# --- components ---------------------------------------------------------------------------


@hookspec
def register_processors(register: RegisterProcessor) -> None:
    """Register frame processors.

    :param register: call ``register(name, factory, options=..., help=...)`` once per processor.

    ``factory(options, context[, id=]) -> Processor`` is called once per configured stage
    with that stage's validated options and the run's :class:`~framelens.Context`.
    It must not block or open devices; do that in ``Processor.start()``.
    Return value: ignored.
    """


@hookspec
def register_sources(register: RegisterSource) -> None:
    """Register frame sources.

    :param register: call ``register(name, factory, schemes=..., claims=...)`` once per source.

    ``-s LOCATOR`` picks a source by exact ``name`` (``testpattern``), then by URL
    scheme (``rtsp://...`` -> ``schemes=("rtsp",)``), then by asking each source's
    ``claims(locator)`` predicate (camera indexes, file paths, globs).
    ``factory(locator, options, context[, id=]) -> Source``; ``id`` is the source's
    name. Return value: ignored.
    """


@hookspec
def register_outputs(register: RegisterOutput) -> None:
    """Register outputs (sinks for processed frames).

    :param register: call ``register(name, factory, schemes=..., claims=...)`` once per output.

    ``-o TARGET`` is resolved like ``-s``: exact name (``mjpeg``, ``none``), URL
    scheme, then ``claims(target)`` (``out.mp4``).
    ``factory(target, options, context[, id=]) -> Output``. Return value: ignored.
    """


@hookspec
def register_backends(register: RegisterBackend) -> None:
    """Register VLM backends (Ollama, OpenAI-compatible servers, local engines).

    :param register: call ``register(name, factory, options=..., help=...)`` once per backend.

    ``factory(options, context[, id=]) -> VLMBackend``; ``id`` is the name the backend
    is shared under (``context.backend("cam2", type="ollama")`` -> ``"cam2"``), which is
    also its options namespace. Backends are shared by name within a run: describers,
    alerts and the HTTP service that name the same backend get the same instance. Return value: ignored.
    """


@hookspec
def register_services(register: RegisterService) -> None:
    """Register long-running services that live beside the frame loop (an HTTP API).

    :param register: call ``register(name, factory, options=..., help=...)`` once per service.

    ``factory(options, context[, id=]) -> Service``. Services are enabled with
    ``-p NAME`` like processors, but receive no frames. Return value: ignored.
    """


@hookspec
def register_plugin_options(register: RegisterPluginOptions) -> None:
    """Declare the ``-c NAMESPACE-key=value`` options of a plugin without components.

    :param register: call ``register(namespace, options, help=...)``; ``options`` is a
        :class:`~framelens.Options` subclass.

    A route-only plugin (one that registers no processor, source, output, backend or
    service, such as ``dashboard``) takes part in every run that serves HTTP, so it
    has no ``-p`` stage whose namespace could carry its settings. This hook gives it
    one: ``-c dashboard-enabled=false`` is then accepted, validated before anything
    starts (a bad value stops the run with exit status 2), and readable as
    :meth:`Context.plugin_options("dashboard") <framelens.Context.plugin_options>`.
    A namespace that another plugin or a component already uses is reported and
    ignored. The core gives the options no meaning; the plugin reads them (in
    ``register_routes``, say) and acts on them. Return value: ignored.
    """


# --- commands -------------------------------------------------------------------------------


@hookspec
def register_commands(cli: CommandRegister) -> None:
    """Add subcommands to the ``framelens`` command line (as llm and datasette plugins do).

    :param cli: argparse's sub-parsers object (guarded, see :class:`~framelens.CommandRegister`).

    Add a command and its handler::

        @hookimpl
        def register_commands(cli):
            p = cli.add_parser("engine", help="manage the local engine")
            add_pipeline_arguments(p)          # from framelens.cli: -f, -p, -c, --backend, ...
            p.set_defaults(handler=handle)

    ``handler(args: argparse.Namespace) -> int`` gets the parsed arguments and returns
    the exit status. Raise :class:`~framelens.ConfigError` for bad input (printed as one
    ``framelens: error: ...`` line, exit status 2) and
    :class:`~framelens.FramelensError` for failures at run time (exit status 1); Ctrl-C
    exits 0. ``args.log_level``, if the command has that argument, sets the log level.
    To run a pipeline, reuse the ``run`` flags with
    :func:`framelens.cli.add_pipeline_arguments`, merge them with
    :func:`framelens.cli.config_from_args` and run it with
    ``framelens.Pipeline.from_config(cfg).run()``.

    ``run``, ``list`` and ``version`` belong to the core, and each other name to the
    first plugin that adds it: a name that is taken is refused and reported (on stderr,
    and by ``framelens list``), never silently shadowed. Called when the command line
    is built, except for the core commands, which need no plugin commands. Keep this
    hook cheap: import what the handler needs inside the handler. Return value: ignored.
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
