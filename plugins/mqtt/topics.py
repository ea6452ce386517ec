"""Topic names of the ``mqtt`` service, in one place so the bridge, discovery and docs agree."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["NODES", "level", "rule_topic_key"]

NODES = "_nodes"
"""``PREFIX/_nodes/NODE/...``: a process's own topics (availability, events without a camera)."""

_UNSAFE = re.compile(r"[+#/\x00]")


def level(value: Any) -> str:
    """``value`` as one topic level: wildcards and separators replaced by ``-``."""
    text = _UNSAFE.sub("-", str(value)).strip() or "-"
    return text


def rule_topic_key(camera: str, key: str) -> str:
    """An id for Home Assistant's ``object_id``: letters, digits, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{camera}_{key}")[:120]
