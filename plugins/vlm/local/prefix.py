"""The prefix cache: KV of prompt prefixes (system prompt + images) kept in spare slots, LRU.

A key is a hash of the model, the prefix's token ids and the content hashes of
the images in it; prefixes always end at an image boundary, so a match never
stops partway through an image.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from .model import Prompt

__all__ = ["PrefixCache", "prefix_key"]


def prefix_key(model_key: str, prompt: Prompt, length: int) -> str:
    """The cache key of ``prompt.ids[:length]``."""
    h = hashlib.sha256(model_key.encode())
    h.update(b"|ids|")
    h.update(",".join(map(str, prompt.ids[:length])).encode())
    for span in prompt.spans:
        if span.end <= length:
            h.update(b"|img|" + span.digest.encode())
    return h.hexdigest()


class PrefixCache:
    """Maps prefix keys to ``(slot, length)`` over a fixed set of KV slots, least recently used evicted."""

    def __init__(self, slots: Sequence[int]) -> None:
        self.free = list(slots)
        self.entries: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def lookup(self, model_key: str, prompt: Prompt, limit: int) -> tuple[int, int] | None:
        """The cached ``(slot, length)`` of the longest image-bounded prefix of ``prompt`` shorter than ``limit``."""
        if not self.free and not self.entries:
            return None
        for end in sorted((b for b in prompt.boundaries() if b < limit), reverse=True):
            key = prefix_key(model_key, prompt, end)
            hit = self.entries.get(key)
            if hit is not None:
                self.entries.move_to_end(key)
                self.hits += 1
                return hit
        self.misses += 1
        return None

    def reserve(self, key: str, length: int) -> int | None:
        """A slot to store a new prefix in (evicting the oldest), or None if it is already cached or disabled."""
        if key in self.entries:
            self.entries.move_to_end(key)
            return None
        if self.free:
            slot = self.free.pop()
        elif self.entries:
            _, (slot, _) = self.entries.popitem(last=False)
        else:
            return None
        self.entries[key] = (slot, length)
        return slot
