"""The exceptions framelens raises on purpose.

    FramelensError
    ├── ConfigError      bad options, deployment files or command lines (exit status 2)
    ├── PluginError      a plugin failed to load or registered a clashing name
    ├── SourceError      a source could not be opened or was lost for good
    ├── OutputError      an output could not be opened (port in use, missing codec, ...)
    └── BackendError     a VLM backend call failed; ``kind`` says how

Every message is written for the person running framelens: it names the thing
that was wrong and, where there is one, the way to fix it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "FramelensError",
    "OutputError",
    "PluginError",
    "SourceError",
]


class FramelensError(Exception):
    """Base class for every error framelens raises deliberately."""


class ConfigError(FramelensError):
    """A user-supplied setting is invalid. The CLI prints the message and exits with status 2."""


class PluginError(FramelensError):
    """A plugin could not be loaded, or two plugins registered the same name."""


class SourceError(FramelensError):
    """A frame source could not be opened, or stopped for good."""


class OutputError(FramelensError):
    """An output could not be opened or written."""


class BackendError(FramelensError):
    """A VLM backend call failed.

    ``kind`` is one of ``"unreachable"``, ``"model_not_found"``, ``"timeout"``,
    ``"rate_limited"``, ``"bad_request"``, ``"unsupported"``, ``"auth"`` or
    ``"server"``; the HTTP service maps it to a status code. ``param`` names the
    request parameter at fault for ``bad_request``/``unsupported``.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "server",
        status: int | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.param = param
        self.retry_after = retry_after
