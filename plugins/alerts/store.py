"""Keeping alert rules across restarts: one JSON file, written atomically, with a previous copy.

Layout next to ``PATH`` (``-c alerts-store=PATH``)::

    PATH                      the current rules
    PATH.bak                  the copy before the last save
    PATH.corrupt-<time>       a damaged file found at start, kept for inspection

Saving writes a temporary file, flushes it to disk and renames it over
``PATH``, so readers see the old or the new rules, never half of them. A
file that cannot be read back is reported, moved aside (never deleted) and
the previous copy is used instead.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rules import AlertRule, RuleError, RuleLimits, build_rules

__all__ = ["LoadedRules", "RuleStore", "StoreError"]

log = logging.getLogger("framelens.alerts")

FORMAT_VERSION = 1


class StoreError(Exception):
    """The rules file cannot be written (disk full, permissions...)."""


@dataclass(frozen=True)
class LoadedRules:
    """What :meth:`RuleStore.load` found: the rules and the file they came from."""

    rules: list[AlertRule]
    path: Path
    saved_at: float | None


class RuleStore:
    """Reads and writes the rules file of one alerts processor. Thread-safe."""

    def __init__(self, path: str | Path, limits: RuleLimits) -> None:
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".bak")
        self.limits = limits
        self._lock = threading.Lock()

    def check_writable(self) -> str | None:
        """Why the store could not be written, or ``None`` if it can."""
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            return f"directory {parent} does not exist"
        if not os.access(parent, os.W_OK):
            return f"directory {parent} is not writable"
        if self.path.is_dir():
            return f"{self.path} is a directory"
        return None

    def _read(self, path: Path) -> LoadedRules:
        """Parse one file; :class:`ValueError` says what is wrong with it."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise ValueError("expected an object with a 'rules' list")
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {data.get('version')!r}")
        try:
            rules = build_rules(data["rules"], self.limits, where="rules")
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        saved = data.get("saved_at")
        return LoadedRules(rules, path, float(saved) if isinstance(saved, (int, float)) else None)

    def load(self) -> LoadedRules | None:
        """The stored rules, ``None`` if nothing was ever stored.

        A damaged ``PATH`` is logged, renamed to ``PATH.corrupt-<time>`` and
        ``PATH.bak`` is tried; if that is damaged too the result is ``None``
        (the caller falls back to its configured rules) and both files stay
        on disk.
        """
        with self._lock:
            for path in (self.path, self.backup):
                if not path.exists():
                    continue
                try:
                    loaded = self._read(path)
                except (OSError, ValueError) as exc:
                    kept = self._set_aside(path)
                    log.error("alerts store %s is damaged (%s); kept it as %s", path, exc, kept)
                    continue
                if path == self.backup:
                    log.error("alerts store: restored %d rules from the previous copy %s", len(loaded.rules), path)
                    # Put the good copy back in place so the next start needs no recovery.
                    self._write(self.path, self._document(loaded.rules))
                return loaded
            return None

    def _set_aside(self, path: Path) -> Path:
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
            n += 1
        try:
            os.replace(path, target)
        except OSError:
            return path
        return target

    @staticmethod
    def _document(rules: Sequence[AlertRule]) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "saved_at": time.time(), "rules": [r.public() for r in rules]}

    def save(self, rules: Sequence[AlertRule]) -> None:
        """Replace the stored rules; the file before is kept as ``PATH.bak``."""
        with self._lock:
            try:
                if self.path.exists():
                    # Copy, not rename: PATH must exist at every instant for a reader.
                    self._copy_atomic(self.path, self.backup)
                self._write(self.path, self._document(rules))
            except OSError as exc:
                raise StoreError(f"cannot write the alerts store {self.path}: {exc.strerror or exc}") from None

    @classmethod
    def _write(cls, path: Path, document: dict[str, Any]) -> None:
        cls._write_bytes(path, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")

    @classmethod
    def _copy_atomic(cls, src: Path, dst: Path) -> None:
        cls._write_bytes(dst, src.read_bytes())

    @staticmethod
    def _write_bytes(path: Path, data: bytes) -> None:
        """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or Path("."))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory if str(directory) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
