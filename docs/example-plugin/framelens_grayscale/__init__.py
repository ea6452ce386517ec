"""An example framelens plugin: a processor, a VLM backend and an HTTP route.

Install it with ``pip install ./docs/example-plugin``, then::

    framelens run -s testpattern -p grayscale -c grayscale-tint=0.2 -o mjpeg
    framelens run -s testpattern -p describe -c describe-backend=brightness -p captions -o mjpeg
    framelens serve -s testpattern -p grayscale --backend brightness
    curl localhost:9000/v1/grayscale        # the route, served while -p grayscale runs

Everything comes from public doors: ``framelens`` and ``framelens.web``.
"""

from __future__ import annotations

from framelens import Context, RegisterFn, RouteRegister, hookimpl

from .backend import BrightnessBackend, BrightnessOptions
from .processor import Grayscale, GrayscaleOptions
from .routes import grayscale_stats

__all__ = ["BrightnessBackend", "BrightnessOptions", "Grayscale", "GrayscaleOptions"]


@hookimpl
def register_processors(register: RegisterFn) -> None:
    def make(options: GrayscaleOptions, context: Context, id: str) -> Grayscale:
        return Grayscale(options, context, id)

    register("grayscale", make, options=GrayscaleOptions, help="convert frames to grayscale")


@hookimpl
def register_backends(register: RegisterFn) -> None:
    register("brightness", lambda options, context: BrightnessBackend(options), options=BrightnessOptions,
             help="a 'VLM' that answers how bright the image is (example backend, no model)")


@hookimpl
def register_routes(register: RouteRegister, context: Context) -> None:
    register("/v1/grayscale", grayscale_stats(context), methods=["GET"], tags=["grayscale"])
