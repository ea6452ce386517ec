"""The local VLM engine: the ``local`` backend, running the model inside framelens.

Importing this package is cheap: torch and transformers are imported only
when an engine is loaded (:func:`.backend.shared_engine`), so ``framelens list``
stays fast. Modules: :mod:`.options` (``-c local-*``), :mod:`.loading` (model
files, hub download, checks), :mod:`.decoder` (framelens's own decoder over the
KV pool), :mod:`.vision`, :mod:`.model` (prompts), :mod:`.sampling`,
:mod:`.prefix`, :mod:`.engine` (the engine thread, batching, choices),
:mod:`.runtime` (loading an engine), :mod:`.backend`, :mod:`.onnx_export` /
:mod:`.onnx_runner` (ONNX Runtime), :mod:`.tensorrt`, :mod:`.commands`
(``framelens engine``), :mod:`.measure` (timings) and :mod:`.tiny` (random test models).
"""

from __future__ import annotations

from framelens import RegisterFn

from ..describer import DescriberOptions
from .backend import LocalBackend
from .backend import register as _register_backend
from .options import DEFAULT_MODEL, LocalOptions

__all__ = ["DEFAULT_MODEL", "LocalBackend", "LocalDescriberOptions", "LocalOptions", "register"]


class LocalDescriberOptions(DescriberOptions, LocalOptions):
    """Options of ``-p local``: the describer and the engine share the ``local-`` namespace."""


def register(register_backend: RegisterFn) -> None:
    """Register the ``local`` backend."""
    _register_backend(register_backend)
