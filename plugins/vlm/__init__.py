"""VLM backends and the describer that works with any of them.

Backends: ``ollama`` (Ollama's native API) and ``nim`` / ``openai`` (OpenAI-compatible
servers), both over the pooled HTTP client in :mod:`.pool`; ``local``, the in-process
engine in :mod:`.local` (torch is imported only when it loads).

Processors: ``describe`` asks whichever backend ``-c describe-backend=NAME`` names
(default: the run's ``--backend``, else ``ollama``), so a third-party backend gets a
describer without writing one. ``ollama``, ``nim`` and ``openai`` are the same
processor bound to that backend, with the backend's options in the describer's own
namespace, as wasmVision users type them: ``-p ollama -c ollama-model=llava``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from framelens import CommandRegister, ConfigError, Context, Options, RegisterFn, hookimpl

from . import local, ollama, openai
from .describer import DescribeOptions, Describer, DescriberOptions, Description
from .local import LocalDescriberOptions
from .ollama import OllamaDescriberOptions
from .openai import NimDescriberOptions, OpenAIDescriberOptions

__all__ = ["DescribeOptions", "Describer", "DescriberOptions", "Description"]


@hookimpl
def register_commands(cli: CommandRegister) -> None:
    from .local.commands import add_commands

    add_commands(cli)


@hookimpl
def register_backends(register: RegisterFn) -> None:
    ollama.register(register)
    openai.register(register)
    local.register(register)


def _describe(options: DescribeOptions, context: Context, id: str) -> Describer:
    name = options.backend or context.default_backend
    if context.registry.find("backend", context.backend_type(name)) is None:
        try:
            context.registry.get("backend", context.backend_type(name))
        except ConfigError as exc:
            raise ConfigError(f"-c {id}-backend={name}: {exc}") from None
    return Describer(options, context, get_backend=lambda: context.backend(name), id=id, model=options.model)


def _alias(backend: str) -> Callable[[DescriberOptions, Context, str], Describer]:
    """``-p BACKEND``: ``describe`` bound to ``backend``, configured from the stage's own namespace."""

    def make(options: DescriberOptions, context: Context, id: str) -> Describer:
        model = context.registry.get("backend", backend).options
        # The stage's backend options (from -c or its deployment-file entry) configure the backend.
        own = {f: getattr(options, f) for f in options.model_fields_set if f in model.model_fields}
        overrides: dict[str, Any] | None = own
        name = id
        base = context.unprefixed(id)
        if base != id:
            # A camera's `-p ollama`: one backend for every camera, unless this camera's stage
            # sets backend options of its own (-c door-ollama-url=...).
            shared = {k.replace("-", "_"): v for k, v in context.root.namespace_options(base).items()
                      if k.replace("-", "_") in model.model_fields}
            try:
                same = model(**own) == model(**shared)
            except ValueError:
                same = False  # the shared settings are invalid: this camera keeps its own (valid) ones
            if same:
                name, overrides = base, None
        return Describer(options, context, id=id,
                         get_backend=lambda: context.backend(name, type=backend, options=overrides))

    return make


_ALIASES: tuple[tuple[str, type[Options], str], ...] = (
    ("ollama", OllamaDescriberOptions,
     "Describe the newest frame with an Ollama vision model, without stalling the video"),
    ("nim", NimDescriberOptions,
     "Describe the newest frame (or a short clip) with a NIM vision model, without stalling the video"),
    ("openai", OpenAIDescriberOptions, "Describe the newest frame with any OpenAI-compatible vision server"),
    ("local", LocalDescriberOptions,
     "Describe the newest frame with the in-process VLM engine (no server), without stalling the video"),
)


@hookimpl
def register_processors(register: RegisterFn) -> None:
    register("describe", _describe, options=DescribeOptions,
             help="Describe the newest frame with any VLM backend (-c describe-backend=NAME), without stalling")
    for name, options, help in _ALIASES:
        register(name, _alias(name), options=options, help=help)
