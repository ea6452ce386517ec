"""File outputs: ``-o out.mp4`` (also ``.avi``, ``.mkv``, ``.mov``, ``.webm``) and ``-o none``.

The recording is written to a hidden temporary file beside the target
(``.out.<pid>.partial.mp4``) and renamed to ``out.mp4`` only when the output is
closed, so a file under the final name is always complete and playable; a run
that is killed leaves only the temporary file behind. Frames are encoded on a
writer thread, so encoding overlaps with processing. Every frame is written:
when the writer falls behind, ``write()`` waits for it (``queue`` frames at most
are buffered) rather than dropping frames.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from pydantic import field_validator

from framelens import (
    ConfigError,
    Context,
    Event,
    Field,
    Frame,
    Options,
    Output,
    OutputError,
    RegisterFn,
)

__all__ = ["DEFAULT_FOURCC", "FileOptions", "NullOutput", "VideoFileOutput"]

log = logging.getLogger("framelens.videofile")

# What OpenCV's bundled FFmpeg can write into each container without extra encoders:
# H.264 (avc1) is missing from the opencv-python wheels, MPEG-4 part 2 is always there.
DEFAULT_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".webm": "VP80"}
DEFAULT_FPS = 30.0
_STOP = object()


class FileOptions(Options):
    path: str = Field("", description="File to write, for -o file; -o out.mp4 sets it from the target")
    fps: float | None = Field(None, gt=0, le=1000, description="Frame rate in the file; default the source's, else 30")
    fourcc: str | None = Field(None, description="Codec FOURCC (mp4v, MJPG, XVID, VP80...); default per container")
    overwrite: bool = Field(True, description="Replace an existing file; false refuses to start if it exists")
    queue: int = Field(32, ge=1, le=1024, description="Frames buffered for the writer thread before write() waits")

    @field_validator("fourcc")
    @classmethod
    def _fourcc(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 4 or not value.isascii()):
            raise ValueError("a FOURCC is exactly 4 ASCII characters, e.g. mp4v or MJPG")
        return value


class VideoFileOutput(Output):
    """Writes every frame to a video file with ``cv2.VideoWriter``; size from the first frame."""

    def __init__(self, path: str, options: FileOptions, context: Context) -> None:
        self.path = Path(path)
        self.options = options
        self.context = context
        ext = self.path.suffix.lower()
        if ext not in DEFAULT_FOURCC:
            raise ConfigError(
                f"-o {path}: cannot write {ext or 'files without an extension'};"
                f" use one of {', '.join(sorted(DEFAULT_FOURCC))}"
            )
        self.fourcc = options.fourcc or DEFAULT_FOURCC[ext]
        self.temp_path = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{ext}")
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self.fps: float | None = options.fps
        self._source_fps: float | None = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=options.queue)
        self._thread: threading.Thread | None = None
        self._writer: cv2.VideoWriter | None = None
        self._error: str | None = None
        self._lost = 0
        self._closed = False
        self._resized = False
        self._unsubscribe: Callable[[], None] = lambda: None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputError(f"-o {self.path}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"-o {self.path}: no permission to write in {parent}")
        if self.path.is_dir():
            raise OutputError(f"-o {self.path}: is a folder")
        if self.path.exists() and not self.options.overwrite:
            raise OutputError(f"-o {self.path}: exists and file-overwrite is false")
        self._probe_writable()
        self._probe_codec()
        self._unsubscribe = self.context.events.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name=f"videofile-{self.path.name}", daemon=True)
        self._thread.start()

    def _probe_writable(self) -> None:
        # os.access says yes for root on /proc and for read-only mounts; only creating a
        # file tells, and a codec failure must not be blamed for it.
        probe = self.path.with_name(f".{self.path.stem}.{os.getpid()}.writable")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"\0")
            finally:
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"-o {self.path}: the path cannot be written: cannot create a file in "
                              f"{self.path.parent} ({exc.strerror or exc})") from None
        finally:
            try:
                probe.unlink()
            except OSError:
                pass

    def _probe_codec(self) -> None:
        # The real writer opens at the first frame (it needs the size); fail now, not then.
        probe = self.path.with_name(f".{self.path.stem}.{os.getpid()}.probe{self.path.suffix}")
        writer = cv2.VideoWriter(str(probe), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*self.fourcc), DEFAULT_FPS,
                                 (64, 64))
        ok = writer.isOpened()
        writer.release()
        probe.unlink(missing_ok=True)
        if not ok:
            raise OutputError(
                f"-o {self.path}: this OpenCV build cannot write {self.fourcc!r} into {self.path.suffix} files;"
                f" try -c file-fourcc={DEFAULT_FOURCC[self.path.suffix.lower()]}"
            )

    def _on_event(self, event: Event) -> None:
        if event.type == "source" and event.source == "main" and event.payload.get("state") == "connected":
            fps = event.payload.get("fps")
            if isinstance(fps, (int, float)) and 0 < fps <= 1000:
                self._source_fps = float(fps)

    def write(self, frame: Frame) -> None:
        if self._error is not None:
            self._lost += 1
            return
        if self._thread is None:
            raise OutputError(f"-o {self.path}: write() before start()")
        self._queue.put(frame.image)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames_written == 0:
            self.temp_path.unlink(missing_ok=True)
            log.warning("%s: no frames were written, so the file was not created", self.path)
            return
        os.replace(self.temp_path, self.path)
        log.info("wrote %d frames (%dx%d, %g fps) to %s", self.frames_written, *(self.size or (0, 0)),
                 self.fps or 0, self.path)
        if self._error is not None:
            log.error("%s: %s; %d frames after that were not written", self.path, self._error, self._lost)

    # -- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # keep draining, so write() never waits on a dead writer
            assert isinstance(item, np.ndarray)
            try:
                self._write(item)
            except Exception as exc:  # a disk full or codec error ends the recording, not the run
                self._fail(str(exc) if isinstance(exc, OutputError) else f"{type(exc).__name__}: {exc}")

    def _write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._writer = self._open(image)
        assert self.size is not None
        if (image.shape[1], image.shape[0]) != self.size:
            if not self._resized:
                log.warning("%s: frame size changed from %dx%d to %dx%d; resizing to the first size",
                            self.path, *self.size, image.shape[1], image.shape[0])
                self._resized = True
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1

    def _open(self, image: np.ndarray) -> cv2.VideoWriter:
        self.size = (int(image.shape[1]), int(image.shape[0]))
        self.fps = self.options.fps or self._source_fps or DEFAULT_FPS
        writer = cv2.VideoWriter(str(self.temp_path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*self.fourcc),
                                 self.fps, self.size)
        if not writer.isOpened():
            writer.release()
            raise OutputError(f"cannot open a {self.fourcc} writer for {self.size[0]}x{self.size[1]} frames")
        return writer

    def _fail(self, message: str) -> None:
        self._error = message
        log.error("%s: %s; the recording stops here", self.path, message)


class NullOutput(Output):
    """Discards every frame (for runs that only produce events or benchmarks)."""

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame: Frame) -> None:
        self.frames += 1


def _is_video_target(target: str) -> bool:
    return "://" not in target and Path(target).suffix.lower() in DEFAULT_FOURCC


def register(register: RegisterFn) -> None:
    def make_file(target: str, options: FileOptions, context: Context) -> VideoFileOutput:
        path = options.path or ("" if target == "file" else target)
        if not path:
            raise ConfigError("-o file: set the file to write with -c file-path=out.mp4, or write -o out.mp4")
        if options.path and target not in ("file", options.path):
            raise ConfigError(f"-o {target}: file-path says {options.path!r}; give the file only once")
        return VideoFileOutput(path, options, context)

    register("file", make_file, options=FileOptions, claims=_is_video_target,
             help="record to a video file: out.mp4, out.avi, out.mkv, out.mov, out.webm")
    register("none", lambda _t, _o, _c: NullOutput(), help="discard frames (events and benchmarks only)")
