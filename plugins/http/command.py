"""``framelens serve``: the OpenAI-compatible HTTP service on its own; sources open on demand.

The ``http`` plugin adds this command through the ``register_commands`` hook; it is a
``run`` with the ``http`` service enabled and, unless ``-s`` is given, no source.
"""

from __future__ import annotations

import argparse
import gc

from framelens import CommandRegister, Pipeline
from framelens.cli import add_pipeline_arguments, config_from_args

__all__ = ["add_serve_command", "handle", "tune_gc"]

GC_THRESHOLD = (50_000, 10, 10)
"""The collector's thresholds while serving (Python's default: 700, 10, 10)."""

EXAMPLES = """\
examples:
  framelens serve --backend ollama -c ollama-model=llava
  framelens serve --port 9000 --backend nim -c nim-url=http://localhost:8000/v1
  framelens serve --host 0.0.0.0 --backend ollama -c http-api-key=secret
"""


def add_serve_command(cli: CommandRegister) -> None:
    p = cli.add_parser(
        "serve",
        help="serve the OpenAI-compatible API without a pipeline",
        description="Serve /v1/chat/completions and friends in front of a VLM backend. "
        "Live sources named in requests (v4l2://, rtsp://, ...) are opened on demand.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 9000)")
    p.add_argument("-s", "--source", action="append", default=[], metavar="[ID=]SOURCE",
                   help="also open this source as stream://main; repeat as -s door=URL -s garage=URL for several"
                   " cameras (stream://door, ...), each its own pipeline")
    p.add_argument("-o", "--output", action="append", default=[], metavar="TARGET",
                   help="outputs (mjpeg, rtsp, a file) for the -s source or, without -s, for the newest stream"
                   " that requests opened")
    add_pipeline_arguments(p, backend_help="the VLM backend that describe, alerts and the http service use when"
                           " told none (ollama, nim, openai, ...; default ollama)")
    p.set_defaults(handler=handle)


def tune_gc() -> None:
    """Keep Python's cyclic garbage collector from taking a fifth of a busy service's CPU.

    With Python's defaults it ran about 100 times a second under load, found nothing
    (a request's objects are freed by reference counting) and took 20-25 % of the
    process's CPU: young collections scanned the objects of the requests in flight,
    full ones the ~90,000 objects that import and start-up left, again and again.
    Those are frozen (they live as long as the process), and a collection starts
    after 50,000 net new objects instead of 700: at 64 clients the requests in flight
    never reach it, at 256 a few times a minute (at 10,000 it still took 16 %).
    Cyclic garbage is still collected, only later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def handle(args: argparse.Namespace) -> int:
    ids = [ident or name for name, _, ident in (p.partition(":") for p in args.processor) if name == "http"]
    if not ids:
        args.processor = [*args.processor, "http"]
    service = ids[0] if ids else "http"
    # Flags go first, so an explicit -c value of the same option still wins over them.
    flags = ((args.host, "host"), (args.port, "port"), (args.backend, "backend"))
    args.config = [*(f"{service}-{key}={value}" for value, key in flags if value is not None), *args.config]
    cfg = config_from_args(args, default_output="none" if args.source else None)
    if cfg.run.get("backend") is None:
        # `-c http-backend=X` alone makes X the run's backend too, so -p alerts and
        # -p describe ask the backend that answers the API.
        chosen = [value for key, value, _ in cfg.raw_settings if key == f"{service}-backend"]
        if chosen:
            cfg.run["backend"] = str(chosen[-1])
    pipeline = Pipeline.from_config(cfg, need_source=bool(args.source))
    tune_gc()
    pipeline.run()
    return 0
