"""framelens: a frame-processor framework for live video and vision-language models.

Plugin authors import everything they need from here::

    from framelens import Frame, Options, Processor, hookimpl

Names not listed in ``__all__`` are internal and may change.
"""

from __future__ import annotations

from .aio import AsyncRunner
from .backend import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    ChoiceResult,
    ContentPart,
    GenerationParams,
    Health,
    ImagePart,
    ModelInfo,
    TextPart,
    Usage,
    VideoPart,
    VLMBackend,
    VLMTimings,
)
from .capture import LiveCapture
from .context import Context
from .errors import BackendError, ConfigError, FramelensError, OutputError, PluginError, SourceError
from .events import Event, EventBus
from .frame import Frame, Results
from .hookspecs import hookimpl
from .imaging import decode_image, encode_jpeg, fit_max_side, sniff_image_type
from .options import CommaList, Field, Options
from .output import Output
from .pipeline import Pipeline
from .plugin_manager import call_register_routes
from .processor import Processor
from .registry import (
    CommandRegister,
    ComponentSpec,
    RegisterBackend,
    RegisterFn,
    RegisterOutput,
    RegisterPluginOptions,
    RegisterProcessor,
    RegisterService,
    RegisterSource,
)
from .results import Caption, Detection, Detections, HasCaption, boxes_of, captions_of
from .service import Service
from .site import Site
from .source import Source, SourceInfo, redact
from .streams import Stream, StreamRegistry
from .web import ApiError, RouteRegister, json_response, read_json
from .worker import BackgroundWorker, FairShare

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncRunner",
    "BackendError",
    "BackgroundWorker",
    "Caption",
    "ChatChunk",
    "ChatMessage",
    "ChatResult",
    "ChoiceResult",
    "CommaList",
    "CommandRegister",
    "ComponentSpec",
    "ConfigError",
    "ContentPart",
    "Context",
    "Detection",
    "Detections",
    "Event",
    "EventBus",
    "FairShare",
    "Field",
    "Frame",
    "FramelensError",
    "GenerationParams",
    "HasCaption",
    "Health",
    "ImagePart",
    "LiveCapture",
    "ModelInfo",
    "Options",
    "Output",
    "OutputError",
    "Pipeline",
    "PluginError",
    "Processor",
    "RegisterBackend",
    "RegisterFn",
    "RegisterOutput",
    "RegisterPluginOptions",
    "RegisterProcessor",
    "RegisterService",
    "RegisterSource",
    "Results",
    "RouteRegister",
    "Service",
    "Site",
    "Source",
    "SourceError",
    "SourceInfo",
    "Stream",
    "StreamRegistry",
    "TextPart",
    "Usage",
    "VLMBackend",
    "VLMTimings",
    "VideoPart",
    "__version__",
    "boxes_of",
    "call_register_routes",
    "captions_of",
    "decode_image",
    "encode_jpeg",
    "fit_max_side",
    "hookimpl",
    "json_response",
    "read_json",
    "redact",
    "sniff_image_type",
]
