"""Plugin discovery: entry points of the ``framelens`` group, built-ins included.

framelens's own plugins are listed under the same entry-point group as
third-party ones, so both are found the same way. Environment switches:

``FRAMELENS_LOAD_PLUGINS=dist1,dist2``
    load entry points only from these distributions (and framelens itself);
    an empty value loads framelens's built-ins only.
``FRAMELENS_DISABLE_PLUGINS=name1,name2``
    never load these entry-point names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KINDS, Registry

if TYPE_CHECKING:
    from .context import Context
    from .web import RouteRegister

__all__ = ["BUILTIN_PLUGINS", "LoadedPlugin", "PluginManager", "call_register_routes", "get_plugin_manager"]

log = logging.getLogger("framelens.plugins")

GROUP = "framelens"
SELF_DIST = "framelens"

# Used only when framelens runs from a source tree without installed metadata;
# an installed framelens finds the same modules through its entry points.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = tuple(
    (name, f"framelens.plugins.{name}")
    for name in ("sources", "outputs", "rtsp", "overlays", "vision", "vlm", "http", "alerts", "dashboard", "mqtt")
)

_HOOK_FOR_KIND = {
    "source": "register_sources",
    "processor": "register_processors",
    "output": "register_outputs",
    "backend": "register_backends",
    "service": "register_services",
}


@dataclass(frozen=True)
class LoadedPlugin:
    """A plugin module that was registered, and the distribution it came from."""

    name: str
    module: str
    distribution: str | None
    version: str | None


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


class PluginManager:
    """pluggy's manager plus framelens's loading rules and component registry."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.loaded: list[LoadedPlugin] = []
        self.problems: list[str] = []
        self._registry: Registry | None = None

    # -- loading ---------------------------------------------------------------------------

    def load_entrypoints(self) -> None:
        only = _env_list("FRAMELENS_LOAD_PLUGINS")
        blocked = set(_env_list("FRAMELENS_DISABLE_PLUGINS") or [])
        seen: dict[str, str] = {}
        for dist in importlib.metadata.distributions():
            ours = [ep for ep in dist.entry_points if ep.group == GROUP]
            if not ours:
                continue  # its METADATA is not parsed: ~50 ms of every CLI start with 140 packages installed
            dist_name = dist.metadata["Name"] or "?"
            for ep in ours:
                if ep.name in blocked:
                    continue
                if only is not None and dist_name != SELF_DIST and dist_name not in only:
                    continue
                if ep.name in seen:
                    if seen[ep.name] != dist_name:
                        self.problems.append(
                            f"plugin name {ep.name!r} is provided by both {seen[ep.name]} and"
                            f" {dist_name}; only the one from {seen[ep.name]} is loaded"
                        )
                    continue
                seen[ep.name] = dist_name
                try:
                    module = ep.load()
                except Exception as exc:  # a broken plugin must not take the CLI down with it
                    self.problems.append(f"plugin {ep.name!r} from {dist_name} failed to load: {exc}")
                    continue
                self.register(module, ep.name, dist_name, dist.version)
        for name, modname in BUILTIN_PLUGINS:
            if name in blocked or name in seen or self.pm.get_plugin(name) is not None:
                continue  # one that failed through its entry point was reported there; not imported twice
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                self.problems.append(f"built-in plugin {name!r} failed to load: {exc}")
                continue
            self.register(module, name, SELF_DIST, None)

    def register(
        self, plugin: ModuleType | object, name: str, distribution: str | None = None, version: str | None = None
    ) -> None:
        """Register a plugin object or module under ``name`` (tests use this directly)."""
        if self.pm.get_plugin(name) is not None:
            raise PluginError(f"a plugin named {name!r} is already registered")
        self.pm.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.loaded.append(LoadedPlugin(name, module, distribution, version))
        self._registry = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.loaded = [p for p in self.loaded if p.name != name]
        self._registry = None

    # -- the registry ----------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """Components registered by every loaded plugin (built once, rebuilt after changes)."""
        if self._registry is None:
            self._registry = self._collect()
        return self._registry

    def _collect(self) -> Registry:
        registry = Registry()
        dists = {p.name: p.distribution for p in self.loaded}
        for kind in KINDS:
            caller = getattr(self.pm.hook, _HOOK_FOR_KIND[kind])
            # Called per implementation so each registration knows which plugin made it.
            for impl in caller.get_hookimpls():
                register = registry.register_fn(kind, impl.plugin_name, dists.get(impl.plugin_name))
                kwargs: dict[str, Any] = {"register": register}
                impl.function(**{a: kwargs[a] for a in impl.argnames})
        # After the components, so a namespace that clashes with a component name is reported.
        for impl in self.pm.hook.register_plugin_options.get_hookimpls():
            register_options = registry.plugin_options_fn(impl.plugin_name, dists.get(impl.plugin_name))
            impl.function(**{a: {"register": register_options}[a] for a in impl.argnames})
        registry.problems[:0] = self.problems
        return registry

    def plugin_names(self) -> Iterable[str]:
        return [p.name for p in self.loaded]


_manager: PluginManager | None = None
_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, with entry points loaded on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = PluginManager()
            manager.load_entrypoints()
            _manager = manager
        return _manager


def call_register_routes(
    register: RouteRegister, context: Context, *, dormant: Callable[[str], RouteRegister] | None = None
) -> None:
    """Call the ``register_routes(register, context)`` hook of the run's plugins.

    The ``http`` service calls this once while it builds its application, so
    routes that plugins add get its API-key check, error handling and metrics.
    Only plugins that take part in the run add routes: those with a component
    configured in it (``context.enabled_plugins``) and those that register no
    components at all (route-only plugins). A context without a plugin manager
    gets no plugin routes. ``dormant(plugin_name)``, if given, returns the register
    for the routes of the plugins left out, so the service can tell a client which
    ``-p`` would serve a path it asked for.
    """
    manager = context.plugins
    if manager is None:
        return
    with_components = {spec.plugin for spec in context.registry.all()}
    for impl in manager.pm.hook.register_routes.get_hookimpls():
        name = impl.plugin_name
        enabled = name in context.enabled_plugins or name not in with_components
        if not enabled and dormant is None:
            continue
        kwargs: dict[str, Any] = {"register": register if enabled else dormant(name), "context": context}  # type: ignore[misc]
        impl.function(**{a: kwargs[a] for a in impl.argnames})
