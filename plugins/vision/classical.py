"""Classical OpenCV processors: ``blur`` and ``facedetect`` (Haar cascades, no download).

``facedetect`` leaves its findings in ``frame.results["facedetect"]`` as a
:class:`Detections` (a sequence of :class:`Detection` boxes), which ``blur``
can use to blur only the faces::

    framelens run -s 0 -p facedetect -c facedetect-draw=false -p blur -c blur-regions=facedetect
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import ValidationInfo, field_validator

from framelens import (
    BackgroundWorker,
    ConfigError,
    Context,
    Detection,
    Detections,
    Field,
    Frame,
    Options,
    Processor,
    RegisterFn,
    boxes_of,
    fit_max_side,
)
from framelens.drawing import Colour, parse_colour

__all__ = [
    "BlurOptions",
    "BlurProcessor",
    "FaceDetectOptions",
    "FaceDetectProcessor",
]

log = logging.getLogger("framelens.classical")

RESULT_KEY = "facedetect"
HAAR_DIR: str = cv2.data.haarcascades  # type: ignore[attr-defined]  # missing from OpenCV's stubs


# -- blur ------------------------------------------------------------------------------------


class BlurOptions(Options):
    kind: Literal["box", "gaussian"] = Field("box", description="box (fast, wasmVision's blur) or gaussian")
    ksize: int = Field(25, ge=1, le=301, description="Kernel size in pixels (odd for gaussian)")
    regions: str = Field("", description="Blur only the boxes of this result key, e.g. facedetect; empty: whole frame")

    @field_validator("ksize")
    @classmethod
    def _odd_for_gaussian(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("kind") == "gaussian" and value % 2 == 0:
            raise ValueError(f"a gaussian kernel must be odd, e.g. {value + 1}")
        return value


class BlurProcessor(Processor):
    """Blurs the frame, or only the boxes another processor found."""

    def __init__(self, options: BlurOptions) -> None:
        self.options = options

    def _blur(self, image: np.ndarray) -> np.ndarray:
        k = self.options.ksize
        if self.options.kind == "gaussian":
            return cv2.GaussianBlur(image, (k, k), 0)
        return cv2.blur(image, (k, k))

    def process(self, frame: Frame) -> Frame:
        key = self.options.regions
        if not key:
            return frame.replace(image=self._blur(frame.image))
        if key not in frame.results:
            return frame
        boxes = boxes_of(frame.results[key])
        if not boxes:
            return frame
        image = frame.image.copy()
        h, w = image.shape[:2]
        for x, y, bw, bh in boxes:
            x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
            if x1 > x0 and y1 > y0:
                image[y0:y1, x0:x1] = self._blur(image[y0:y1, x0:x1])
        return frame.replace(image=image)


# -- face detection --------------------------------------------------------------------------


class FaceDetectOptions(Options):
    cascade: str = Field("haarcascade_frontalface_default.xml",
                         description="Cascade file: a name in cv2.data.haarcascades, or a path")
    scale_factor: float = Field(1.1, gt=1.0, le=2.0, description="Image pyramid step; lower finds more, slower")
    min_neighbors: int = Field(5, ge=0, le=100, description="Overlapping hits needed; higher means fewer false ones")
    min_size: int = Field(30, ge=1, description="Smallest face to find, in frame pixels")
    max_side: int = Field(640, ge=0, description="Detect on a copy shrunk to this longer side (speed); 0: full size")
    draw: bool = Field(True, description="Draw the boxes on the video")
    color: Colour = Field("green", description="Box colour: a name or #rrggbb")
    count: bool = Field(False, description="Also show the count as a caption (drawn by captions)")
    sync: bool = Field(False, description="Detect on every frame in the loop (exact boxes, slower loop);"
                       " default: in the background on the newest frame, boxes lag by the detection time")


def cascade_path(name: str) -> str:
    """The file for a cascade option value; :class:`ConfigError` if there is none."""
    for candidate in (name, os.path.join(HAAR_DIR, name), os.path.join(HAAR_DIR, name + ".xml")):
        if os.path.isfile(candidate):
            return candidate
    shipped = sorted(f for f in os.listdir(HAAR_DIR) if f.endswith(".xml"))
    raise ConfigError(f"facedetect-cascade: no cascade {name!r}; OpenCV ships: {', '.join(shipped)}")


class FaceDetectProcessor(Processor):
    """Finds faces with a Haar cascade; publishes :class:`Detections` and draws their boxes."""

    def __init__(self, options: FaceDetectOptions, context: Context) -> None:
        self.options = options
        self.context = context
        self.path = cascade_path(options.cascade)
        self.colour = parse_colour(options.color)
        self._cascade: cv2.CascadeClassifier | None = None
        self._worker: BackgroundWorker[Detections] | None = None
        self._latest: Detections | None = None

    def start(self) -> None:
        cascade = cv2.CascadeClassifier(self.path)
        if cascade.empty():
            raise ConfigError(f"facedetect-cascade: {self.path} is not a valid Haar cascade file")
        self._cascade = cascade
        if not self.options.sync:
            self._worker = BackgroundWorker("facedetect", self.detect, on_result=self._store)
            self._worker.start()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()  # kept: its call statistics go into the --benchmark report

    def stats(self) -> dict[str, Any]:
        return self._worker.stats() if self._worker is not None else {}

    def detect(self, frame: Frame) -> Detections:
        """Run the cascade on ``frame`` (any thread; one call at a time)."""
        assert self._cascade is not None, "start() first"
        o = self.options
        small = fit_max_side(frame.image, o.max_side)
        scale = frame.width / small.shape[1]
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        min_px = max(1, round(o.min_size / scale))
        found = self._cascade.detectMultiScale(grey, scaleFactor=o.scale_factor, minNeighbors=o.min_neighbors,
                                               minSize=(min_px, min_px))
        items = tuple(Detection(*(round(v * scale) for v in box)) for box in np.asarray(found).reshape(-1, 4))
        return Detections(items, frame.index, o.count)

    def _store(self, _frame: Frame, result: Detections, _seconds: float) -> None:
        self._latest = result

    def process(self, frame: Frame) -> Frame:
        if self._worker is not None:
            self._worker.submit(frame)
            found = self._latest
        else:
            found = self.detect(frame)
        if found is None:
            return frame
        frame.results[RESULT_KEY] = found
        if not (self.options.draw and found.items):
            return frame
        image = frame.image.copy()
        thickness = max(2, frame.height // 240)
        for d in found:
            cv2.rectangle(image, (d.x, d.y), (d.x + d.w, d.y + d.h), self.colour, thickness, cv2.LINE_AA)
        return frame.replace(image=image)


def register(register: RegisterFn) -> None:
    def make_blur(options: BlurOptions, context: Context) -> BlurProcessor:
        return BlurProcessor(options)

    def make_facedetect(options: FaceDetectOptions, context: Context) -> FaceDetectProcessor:
        return FaceDetectProcessor(options, context)

    register("blur", make_blur, options=BlurOptions, help="box or gaussian blur, of the frame or of detected regions")
    register("facedetect", make_facedetect, options=FaceDetectOptions,
             help="find faces with an OpenCV Haar cascade; results['facedetect'], optional boxes")
