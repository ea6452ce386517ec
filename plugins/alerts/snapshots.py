"""JPEG snapshots attached to alert events: a file path, inline base64, or nothing.

The snapshot is the exact JPEG the VLM was shown (after ``alerts-max-side``),
so what a notification shows is what the model judged. One evaluation writes
at most one file, shared by every rule that changed state on that frame.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

__all__ = ["SnapshotMode", "Snapshotter", "default_snapshot_dir"]

log = logging.getLogger("framelens.alerts")

SnapshotMode = Literal["path", "inline", "none"]

_NAME = re.compile(r"^alert-\d{8}-\d{6}-\d{3}-f\d+(?:-\d+)?\.jpg$")


def default_snapshot_dir() -> str:
    """Where snapshots go unless ``alerts-snapshot-dir`` says otherwise."""
    return os.path.join(tempfile.gettempdir(), "framelens-alerts")


class Snapshotter:
    """Turns an evaluated JPEG into the ``snapshot`` fields of an alert event.

    In ``path`` mode files are named ``alert-<date>-<time>-f<frame>.jpg`` and
    only the newest ``keep`` files of that pattern in the directory are kept,
    so disk use stays bounded on a device that runs for months.
    """

    def __init__(self, mode: SnapshotMode, directory: str | Path, keep: int) -> None:
        self.mode = mode
        self.directory = Path(directory)
        self.keep = keep
        self._files: deque[Path] = deque()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Create the directory and take over older snapshots for pruning. Raises :class:`OSError`."""
        if self.mode != "path":
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if not os.access(self.directory, os.W_OK):
            raise PermissionError(f"{self.directory} is not writable")
        existing = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        existing.sort(key=lambda p: p.stat().st_mtime)
        self._files.extend(existing)
        self._prune()

    def attach(self, jpeg: bytes, frame_index: int, capture_time: float) -> dict[str, Any]:
        """Store ``jpeg`` and return the event fields that point to it (``{}`` in ``none`` mode)."""
        if self.mode == "none":
            return {}
        if self.mode == "inline":
            return {"snapshot_base64": base64.b64encode(jpeg).decode("ascii"), "snapshot_type": "image/jpeg"}
        try:
            path = self._write(jpeg, frame_index, capture_time)
        except OSError as exc:
            log.error("alerts: cannot write snapshot to %s: %s", self.directory, exc)
            return {"snapshot_error": f"cannot write snapshot: {exc.strerror or exc}"}
        return {"snapshot_path": str(path), "snapshot_type": "image/jpeg"}

    def _write(self, jpeg: bytes, frame_index: int, capture_time: float) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(capture_time))
        millis = int((capture_time % 1) * 1000)
        base = f"alert-{stamp}-{millis:03d}-f{frame_index}"
        with self._lock:
            path = self.directory / f"{base}.jpg"
            n = 1
            while path.exists():
                path = self.directory / f"{base}-{n}.jpg"
                n += 1
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "wb") as f:
                f.write(jpeg)
            os.replace(tmp, path)  # readers never see half a JPEG
            self._files.append(path)
            self._prune()
        return path

    def _prune(self) -> None:
        while len(self._files) > self.keep:
            old = self._files.popleft()
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("alerts: cannot remove old snapshot %s: %s", old, exc)
