"""The name -> factory registry that plugins fill through the ``register_*`` hooks."""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError, PluginError
from .options import Options, closest

if TYPE_CHECKING:
    from .backend import VLMBackend
    from .output import Output
    from .processor import Processor
    from .service import Service
    from .source import Source

__all__ = [
    "KINDS",
    "CommandRegister",
    "ComponentSpec",
    "PluginOptionsSpec",
    "RegisterBackend",
    "RegisterFn",
    "RegisterOutput",
    "RegisterPluginOptions",
    "RegisterProcessor",
    "RegisterService",
    "RegisterSource",
    "Registry",
]

KINDS = ("source", "processor", "output", "backend", "service")

_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class RegisterFn(Protocol):
    """The ``register`` callable handed to the collection hooks."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        options: type[Options] = Options,
        help: str = "",
        schemes: Sequence[str] = (),
        claims: Callable[[str], bool] | None = None,
    ) -> None: ...


# The typed registers: the same callable as RegisterFn, with the factory's return type per kind,
# so a type checker catches a processor factory that returns the wrong thing. The runtime also
# checks what a factory returned, for plugins that are not type checked.


class RegisterProcessor(Protocol):
    """``register`` of ``register_processors``: ``factory(options, context[, id=]) -> Processor``."""

    def __call__(self, name: str, factory: Callable[..., Processor], *, options: type[Options] = Options,
                 help: str = "") -> None: ...


class RegisterSource(Protocol):
    """``register`` of ``register_sources``: ``factory(locator, options, context[, id=]) -> Source``."""

    def __call__(self, name: str, factory: Callable[..., Source], *, options: type[Options] = Options,
                 help: str = "", schemes: Sequence[str] = (), claims: Callable[[str], bool] | None = None) -> None: ...


class RegisterOutput(Protocol):
    """``register`` of ``register_outputs``: ``factory(target, options, context[, id=]) -> Output``."""

    def __call__(self, name: str, factory: Callable[..., Output], *, options: type[Options] = Options,
                 help: str = "", schemes: Sequence[str] = (), claims: Callable[[str], bool] | None = None) -> None: ...


class RegisterBackend(Protocol):
    """``register`` of ``register_backends``: ``factory(options, context[, id=]) -> VLMBackend``."""

    def __call__(self, name: str, factory: Callable[..., VLMBackend], *, options: type[Options] = Options,
                 help: str = "") -> None: ...


class RegisterService(Protocol):
    """``register`` of ``register_services``: ``factory(options, context[, id=]) -> Service``."""

    def __call__(self, name: str, factory: Callable[..., Service], *, options: type[Options] = Options,
                 help: str = "") -> None: ...


class RegisterPluginOptions(Protocol):
    """The ``register`` callable of ``register_plugin_options``: ``register(namespace, options, help=...)``."""

    def __call__(self, namespace: str, options: type[Options], *, help: str = "") -> None: ...


class CommandRegister(Protocol):
    """The ``cli`` object handed to ``register_commands``: argparse's sub-parsers, guarded.

    ``add_parser(NAME, help=..., **kwargs)`` takes what
    :meth:`argparse._SubParsersAction.add_parser` takes and returns the new command's
    parser. A name that is taken (a core command or another plugin's) is refused: the
    problem is reported and a detached parser is returned, so the plugin's code goes on.
    """

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


@dataclass(frozen=True)
class ComponentSpec:
    """One registered thing: its kind, name, factory, options and origin."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[Options]
    help: str
    plugin: str
    distribution: str | None = None
    schemes: tuple[str, ...] = ()
    claims: Callable[[str], bool] | None = field(default=None, compare=False)

    def create(self, id: str, *args: Any) -> Any:
        """Call the factory with ``args``; a factory that declares an ``id`` parameter also
        gets the component id (``-p ollama:cam2`` -> ``"cam2"``), so two instances can
        tell themselves apart. Every kind of component is built through here."""
        try:
            params = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            return self.factory(*args)
        if "id" in params:
            return self.factory(*args, id=id)
        return self.factory(*args)


@dataclass(frozen=True)
class PluginOptionsSpec:
    """The ``-c NAMESPACE-key=value`` options of a plugin that has no component of its own."""

    namespace: str
    options: type[Options]
    help: str
    plugin: str
    distribution: str | None = None


class Registry:
    """Every component the loaded plugins registered, by kind and name.

    ``plugin_options`` holds the option namespaces that route-only plugins declared
    with ``register_plugin_options`` (namespace -> spec); they are not components.
    """

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}
        self.problems: list[str] = []
        self.plugin_options: dict[str, PluginOptionsSpec] = {}

    def plugin_options_fn(self, plugin: str, distribution: str | None) -> RegisterPluginOptions:
        """The ``register`` callable handed to ``plugin``'s ``register_plugin_options`` hook."""
        def register(namespace: str, options: type[Options], *, help: str = "") -> None:
            if not _NAME.match(namespace):
                raise PluginError(f"plugin {plugin!r} registered an invalid option namespace {namespace!r}")
            if not (isinstance(options, type) and issubclass(options, Options)):
                raise PluginError(f"options {namespace!r} from {plugin!r}: must subclass framelens.Options")
            taken = self.plugin_options.get(namespace)
            clash = taken.plugin if taken else next((s.plugin for s in self.all() if s.name == namespace), None)
            if clash is not None:
                self.problems.append(f"option namespace {namespace!r} of {plugin} is already taken by {clash};"
                                     f" the first one is used")
                return
            self.plugin_options[namespace] = PluginOptionsSpec(namespace, options, help, plugin, distribution)

        return register

    def register_fn(self, kind: str, plugin: str, distribution: str | None) -> RegisterFn:
        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            options: type[Options] = Options,
            help: str = "",
            schemes: Sequence[str] = (),
            claims: Callable[[str], bool] | None = None,
        ) -> None:
            if not _NAME.match(name):
                raise PluginError(f"plugin {plugin!r} registered an invalid {kind} name {name!r}")
            if not (isinstance(options, type) and issubclass(options, Options)):
                raise PluginError(f"{kind} {name!r} from {plugin!r}: options must subclass framelens.Options")
            spec = ComponentSpec(
                kind, name, factory, options, help, plugin, distribution, tuple(schemes), claims
            )
            self.add(spec)

        return register

    def add(self, spec: ComponentSpec) -> None:
        existing = self._specs[spec.kind].get(spec.name)
        if existing is not None:
            self.problems.append(
                f"{spec.kind} {spec.name!r} is registered twice: by {existing.plugin}"
                f" ({existing.distribution or 'no distribution'}) and by {spec.plugin}"
                f" ({spec.distribution or 'no distribution'}); the first one is used."
                f" Uninstall one, or block it with FRAMELENS_DISABLE_PLUGINS={spec.plugin}"
            )
            return
        self._specs[spec.kind][spec.name] = spec

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec called ``name``; a :class:`ConfigError` with suggestions otherwise."""
        try:
            return self._specs[kind][name]
        except KeyError:
            names = sorted(self._specs[kind])
            near = closest(name, names)
            hint = f"did you mean {', '.join(near)}?" if near else f"available: {', '.join(names) or 'none'}"
            raise ConfigError(f"unknown {kind} {name!r} ({hint})") from None

    def find(self, kind: str, name: str) -> ComponentSpec | None:
        return self._specs[kind].get(name)

    def all(self, kind: str | None = None) -> Iterator[ComponentSpec]:
        kinds = KINDS if kind is None else (kind,)
        for k in kinds:
            yield from sorted(self._specs[k].values(), key=lambda s: s.name)

    def resolve(self, kind: str, locator: str) -> ComponentSpec:
        """Find the source or output for ``-s``/``-o`` LOCATOR: by name, scheme, then claims."""
        specs = self._specs[kind]
        if locator in specs:
            return specs[locator]
        m = _SCHEME.match(locator)
        if m:
            scheme = m.group(1).lower()
            for spec in specs.values():
                if scheme in spec.schemes:
                    return spec
        for spec in sorted(specs.values(), key=lambda s: s.name):
            if spec.claims is not None and spec.claims(locator):
                return spec
        names = sorted(specs)
        schemes = sorted({f"{s}://" for spec in specs.values() for s in spec.schemes})
        raise ConfigError(
            f"no {kind} understands {locator!r} (names: {', '.join(names) or 'none'};"
            f" URL schemes: {', '.join(schemes) or 'none'})"
        )
