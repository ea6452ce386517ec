"""``framelens serve``: the OpenAI-compatible HTTP service on its own; sources open on demand."""

from __future__ import annotations

import argparse
from typing import Any

from ..plugin_manager import get_plugin_manager
from ..runtime import Runtime
from .run import add_pipeline_arguments, config_from_args

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  framelens serve --backend ollama -c ollama-model=llava
  framelens serve --port 9000 --backend nim -c nim-url=http://localhost:8000/v1
  framelens serve --host 0.0.0.0 --backend ollama -c http-api-key=secret
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the OpenAI-compatible API without a pipeline",
        description="Serve /v1/chat/completions and friends in front of a VLM backend. "
        "Live sources named in requests (v4l2://, rtsp://, ...) are opened on demand.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 9000)")
    p.add_argument("-s", "--source", help="also open this source as stream://main")
    p.add_argument("-o", "--output", action="append", default=[], metavar="TARGET",
                   help="outputs (mjpeg, rtsp, a file) for the -s source or, without -s, for the newest stream"
                   " that requests opened")
    add_pipeline_arguments(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if "http" not in [p.partition(":")[0] for p in args.processor]:
        args.processor = [*args.processor, "http"]
    for flag, key in ((args.host, "host"), (args.port, "port")):
        if flag is not None:
            args.config = [f"http-{key}={flag}", *args.config]
    cfg = config_from_args(args, default_output="none" if args.source else None)
    manager = get_plugin_manager()
    runtime = Runtime(cfg, manager.registry, plugins=manager)
    runtime.build(need_source=args.source is not None)
    runtime.run()
    return 0
