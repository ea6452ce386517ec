"""``framelens run``: read a source, process frames, write outputs."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import RunConfig, load_deployment, merge_cli
from ..pipeline import Pipeline

__all__ = ["add_parser", "add_pipeline_arguments", "config_from_args"]

EXAMPLES = """\
examples:
  framelens run -s testpattern -p fps -o mjpeg
      test pattern with an fps counter at http://localhost:8080/
  framelens run -s /dev/video0 -p ollama -c ollama-model=llava -p captions -o mjpeg
      describe the webcam with Ollama and draw the description
  framelens run -s rtsp://cam.local/stream -p blur -o out.mp4 -o mjpeg
      blur a camera stream, record it and watch it in the browser
  framelens run -s clip.mp4 -p facedetect -p fps -o none --benchmark
      measure a pipeline on a file, as fast as it goes
  framelens run -f configs/webcam-ollama.yaml -c ollama-model=moondream
      run a deployment file, overriding one option
  framelens run -s door=rtsp://cam1/s1 -s garage=rtsp://cam2/s1 -p ollama -p captions -o out-{camera}.mp4
      two cameras in one process, each its own loop, sharing one Ollama backend
  framelens run -s clip.mp4 -p facedetect -c facedetect-every=3 -p captions -o mjpeg
      run facedetect on every third frame only (-c NAME-max-fps=F: at most F times a second)

Options are namespaced by the component's name (or the id given as -p NAME:ID):
-c ollama-model=llava sets option `model` of `ollama`. See `framelens list NAME`.
"""


def add_pipeline_arguments(p: argparse.ArgumentParser, *, backend_help: str | None = None) -> None:
    """Add the flags every pipeline command shares (``-f``, ``-p``, ``-c``, ``--backend``,
    ``--events``, ``--log-level``) to ``p``; :func:`config_from_args` reads them back.
    ``backend_help`` replaces the help of ``--backend``, for a command that gives it more meaning."""
    p.add_argument("-f", "--file", help="deployment YAML file (see configs/)")
    p.add_argument("-p", "--processor", action="append", default=[], metavar="NAME[:ID]",
                   help="add a processor or service; repeat to chain, in order")
    p.add_argument("-c", "--config", action="append", default=[], metavar="KEY=VALUE",
                   help="set an option, namespaced by component: -c ollama-model=llava")
    p.add_argument("--backend", metavar="NAME",
                   help=backend_help or "the VLM backend that describe, alerts and services use when told none"
                   " (ollama, nim, openai, ...; default ollama)")
    p.add_argument("--events", metavar="PATH", help="append every event as a JSON line to PATH (- for stdout)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                   help="log verbosity (default info)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline: source -> processors -> outputs",
        description="Read frames from a source, pass them through processors in the given order, "
        "and write them to outputs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-s", "--source", action="append", default=[], metavar="[ID=]SOURCE",
                   help="testpattern, 0, /dev/video0, v4l2:///dev/video0, csi://0, rtsp://..., http://..., a video,"
                   " an image, a directory or glob (default 0); repeat as -s door=URL -s garage=URL for several"
                   " cameras, each its own pipeline")
    p.add_argument("-o", "--output", action="append", default=[], metavar="TARGET",
                   help="mjpeg (default), rtsp, none, or a file such as out.mp4; repeatable; with several cameras"
                   " a target holds {camera} (out-{camera}.mp4) or is none")
    add_pipeline_arguments(p)
    p.add_argument("--width", type=int, help="requested capture width")
    p.add_argument("--height", type=int, help="requested capture height")
    p.add_argument("--fps", type=float, help="requested capture frame rate")
    p.add_argument("--realtime", action="store_true", default=None,
                   help="play files at their native frame rate instead of as fast as possible")
    p.add_argument("--loop", action="store_true", default=None, help="restart files when they end")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--max-failures", type=int, metavar="N",
                   help="disable a processor after N consecutive failures (default 10)")
    p.add_argument("--max-reconnects", type=int, metavar="N",
                   help="give up on a live source after N failed reconnect attempts in a row (default: never);"
                   " with several cameras that camera ends and the run exits 1 naming it")
    p.add_argument("--benchmark", action="store_true", default=None,
                   help="print a JSON line with frames, fps and per-processor timings at exit")
    p.set_defaults(handler=handle)


def config_from_args(args: argparse.Namespace, *, default_output: str | None = "mjpeg") -> RunConfig:
    """The :class:`RunConfig` that parsed pipeline flags describe: the ``-f`` file, with the
    flags laid over it. Flags a command lacks (``-s``, ``-o``, ``--max-frames``...) are
    skipped; without outputs the run gets ``default_output`` (``None``: no output)."""
    cfg = load_deployment(args.file) if args.file else RunConfig()
    run_flags = {
        "width": getattr(args, "width", None),
        "height": getattr(args, "height", None),
        "fps": getattr(args, "fps", None),
        "realtime": getattr(args, "realtime", None),
        "loop": getattr(args, "loop", None),
        "max-frames": getattr(args, "max_frames", None),
        "max-failures": getattr(args, "max_failures", None),
        "max-reconnects": getattr(args, "max_reconnects", None),
        "benchmark": getattr(args, "benchmark", None),
        "events": args.events,
        "backend": args.backend,
    }
    merge_cli(cfg, source=getattr(args, "source", None), stages=args.processor,
              outputs=getattr(args, "output", []), settings=args.config, run=run_flags)
    if not cfg.outputs and default_output:
        if len(cfg.cameras) > 1:
            default_output = "none"  # one mjpeg port cannot show several cameras; each camera names its own
        # Only the defaults: a camera's own outputs from the file stay.
        cfg.outputs = merge_cli(RunConfig(), source=None, stages=[], outputs=[default_output], settings=[],
                                run={}).outputs
    return cfg


def handle(args: argparse.Namespace) -> int:
    Pipeline.from_config(config_from_args(args)).run()
    return 0
