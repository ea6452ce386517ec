"""What a run gives its plugins: events, shared results, backends, streams, the I/O loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from .aio import AsyncRunner
from .backend import VLMBackend
from .errors import ConfigError
from .events import EventBus
from .options import option_key, parse_options
from .registry import Registry
from .source import Source
from .streams import StreamRegistry

if TYPE_CHECKING:
    from .plugin_manager import PluginManager

__all__ = ["Context"]

T = TypeVar("T")

log = logging.getLogger("framelens")


class Context:
    """Shared state of one run, handed to every component factory.

    Attributes:
        registry: every registered component (to look up other plugins).
        events: the event bus behind ``--events``, the HTTP service and notifiers.
        runner: the run's asyncio loop thread, for network I/O.
        streams: live sources kept open (``stream://ID``).
        metrics: the Prometheus registry that ``/metrics`` exposes.
        stopping: set when the run is shutting down.
        plugins: the run's plugin manager (``None`` for a context built on a bare registry).
        default_backend: the backend components use when told none (``--backend``, else ``ollama``).
        enabled_plugins: names of the plugins with a component configured in this run.
        camera: the camera this context serves (``None`` for a run's own, root context).
        parent: the site's context for a camera's child context (see :meth:`child`), else ``None``.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        namespaces: Mapping[str, Mapping[str, Any]] | None = None,
        events: EventBus | None = None,
        runner: AsyncRunner | None = None,
        plugins: PluginManager | None = None,
        default_backend: str | None = None,
        backend_types: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.camera: str | None = None
        self.parent: Context | None = None
        self.backend_types: dict[str, str] = dict(backend_types or {})
        self.plugins = plugins
        self.default_backend = default_backend or "ollama"
        self.enabled_plugins: set[str] = set()
        self.events = events or EventBus()
        self.runner = runner or AsyncRunner()
        self.metrics = CollectorRegistry()
        self.stopping = threading.Event()
        self.streams = StreamRegistry(self.make_source, self.events)
        self.frame_stats: dict[str, Any] = {}
        self._namespaces = {k: dict(v) for k, v in (namespaces or {}).items()}
        self._sticky: dict[str, Any] = {}
        self._sticky_lock = threading.Lock()
        self._backends: dict[str, VLMBackend] = {}
        self._backend_lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self._state: dict[str, Any] = {}
        self._state_lock = threading.Lock()

    # -- cameras ---------------------------------------------------------------------------

    def child(self, camera: str, *, namespaces: Mapping[str, Mapping[str, Any]] | None = None) -> Context:
        """A context for one camera of a site.

        The child has its own ``-c`` namespaces (its stages' ids are ``CAMERA-NAME``), its
        own sticky results and its own shutdown steps; it shares everything else with
        this context: events, runner, streams, metrics, backends, :meth:`state`, plugins.
        Closing the child runs only its own shutdown steps, never those of the shared
        parts (the site's context closes them).
        """
        kid = Context.__new__(Context)
        kid.__dict__.update(self.__dict__)
        kid.camera = camera
        kid.parent = self
        kid.stopping = threading.Event()
        kid._namespaces = {k: dict(v) for k, v in (namespaces or {}).items()}
        kid._sticky = {}
        kid._sticky_lock = threading.Lock()
        kid._closers = []
        return kid

    @property
    def root(self) -> Context:
        """The site's context (this one when it is not a camera's child)."""
        return self.parent.root if self.parent is not None else self

    def unprefixed(self, id: str) -> str:
        """A camera stage's id without its ``CAMERA-`` prefix (``door-describe`` -> ``describe``)."""
        prefix = f"{self.camera}-" if self.camera else ""
        return id[len(prefix):] if prefix and id.startswith(prefix) else id

    # -- results that outlive a frame ------------------------------------------------------

    def publish_result(self, key: str, value: Any) -> None:
        """Make ``value`` visible as ``frame.results[key]`` on every later frame until replaced.

        ``None`` removes the key. Safe to call from any thread.
        """
        with self._sticky_lock:
            if value is None:
                self._sticky.pop(key, None)
            else:
                self._sticky = {**self._sticky, key: value}

    def sticky_results(self) -> Mapping[str, Any]:
        """The current published results (a snapshot; never mutated afterwards)."""
        return self._sticky

    # -- per-component state -----------------------------------------------------------------

    def state(self, key: str, factory: Callable[[], T]) -> T:
        """The object this run keeps under ``key``, made by ``factory()`` on first use.

        Components keep run-wide state here (like Starlette's ``app.state``) instead of
        module globals, so two runs in one process never see each other's. Use your
        plugin's name as ``key``. Safe to call from any thread.
        """
        with self._state_lock:
            if key not in self._state:
                self._state[key] = factory()
            value: T = self._state[key]
            return value

    # -- options ---------------------------------------------------------------------------

    def namespace_options(self, namespace: str) -> dict[str, Any]:
        """Raw ``-c NAMESPACE-key=value`` settings for ``namespace`` (unvalidated); a camera's
        child context sees the site's settings under its own."""
        inherited = self.parent.namespace_options(namespace) if self.parent is not None else {}
        return {**inherited, **self._namespaces.get(namespace, {})}

    def plugin_options(self, namespace: str) -> Any:
        """The validated options a route-only plugin declared with ``register_plugin_options``.

        Built from the run's ``-c NAMESPACE-...`` settings (defaults where none are given).
        Raises :class:`ConfigError` naming the setting when a value is invalid, and
        :class:`KeyError` when no plugin declared ``namespace``.
        """
        spec = self.registry.plugin_options[namespace]
        declared = {option_key(f) for f in spec.options.model_fields}
        raw = {k: v for k, v in self.namespace_options(namespace).items() if k in declared}
        return parse_options(spec.options, raw, namespace=namespace)

    # -- backends --------------------------------------------------------------------------

    def share_backend(self, name: str, backend: VLMBackend) -> None:
        """Offer ``backend`` under ``name`` so services and alerts that ask for it reuse it."""
        with self._backend_lock:
            self._backends.setdefault(name, backend)

    def backend_type(self, name: str) -> str:
        """The registered backend that ``name`` is an instance of (``backends: {vlm: {backend: ollama}}``
        makes ``vlm`` an ``ollama``); ``name`` itself otherwise."""
        return self.backend_types.get(name, name)

    def backend(self, name: str, *, type: str | None = None,
                options: Mapping[str, Any] | None = None) -> VLMBackend:
        """The run's backend called ``name``, created on first use.

        ``type`` is the registered backend to create (default: the type the deployment
        declared for ``name``, else ``name``); its options are the ``-c NAME-...``
        settings that it declares, so ``-p ollama:cam2`` gets an ``ollama`` backend
        configured by ``-c cam2-url=...``. Everyone who asks for the same name shares
        one instance (the cameras of a site too), which the site's context closes at
        shutdown. ``options`` (``{"url": ...}``) are laid over those settings when this
        call creates the instance (a stage's own options, such as a deployment file's
        ``- ollama: {model: moondream}``); they are ignored once it exists.
        """
        with self._backend_lock:
            existing = self._backends.get(name)
            if existing is not None:
                return existing
            spec = self.registry.get("backend", type or self.backend_type(name))
            declared = {option_key(f) for f in spec.options.model_fields}
            # A camera's own instance (CAMERA-NAME) takes the camera's settings; any other is
            # the site's, configured by the site's settings whichever camera asks first.
            own = self.camera is not None and name.startswith(f"{self.camera}-")
            where = self if own else self.root
            raw = {k: v for k, v in where.namespace_options(name).items() if k in declared}
            raw.update({option_key(k): v for k, v in (options or {}).items() if option_key(k) in declared})
            validated = parse_options(spec.options, raw, namespace=name)
            backend = spec.create(name, validated, self)
            if not isinstance(backend, VLMBackend):
                raise ConfigError(f"backend {spec.name!r} factory did not return a VLMBackend")
            self._backends[name] = backend
            self.enabled_plugins.add(spec.plugin)
            return backend

    def backends(self) -> dict[str, VLMBackend]:
        with self._backend_lock:
            return dict(self._backends)

    # -- sources ---------------------------------------------------------------------------

    def make_source(self, locator: str) -> Source:
        """A source object for ``locator`` (resolved like ``-s``), not yet opened."""
        spec = self.registry.resolve("source", locator)
        declared = {option_key(f) for f in spec.options.model_fields}
        raw = {k: v for k, v in self.namespace_options(spec.name).items() if k in declared}
        options = parse_options(spec.options, raw, namespace=spec.name)
        source = spec.create(spec.name, locator, options, self)
        if not isinstance(source, Source):
            raise ConfigError(f"source {spec.name!r} factory did not return a Source")
        return source

    # -- shutdown --------------------------------------------------------------------------

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` at shutdown (after outputs and services stopped), last added first."""
        self._closers.append(fn)

    def close(self) -> None:
        """Run the shutdown steps. A camera's child context stops there; the root context
        also closes every stream, every shared backend and the runner."""
        self.stopping.set()
        if self.parent is not None:
            for fn in reversed(self._closers):
                try:
                    fn()
                except Exception:
                    log.exception("shutdown step %r failed", fn)
            return
        self.streams.close_all()
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:
                log.exception("shutdown step %r failed", fn)
        backends = self.backends()
        if backends and self.runner.loop.is_running():
            for name, b in backends.items():
                try:
                    self.runner.run(b.aclose(), timeout=5)
                except Exception:
                    log.exception("closing backend %s failed", name)
        self.runner.stop()
