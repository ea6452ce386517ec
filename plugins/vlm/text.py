"""Cleaning model answers before they are shown: reasoning blocks."""

from __future__ import annotations

__all__ = ["ThinkFilter"]


class ThinkFilter:
    """Drops a leading ``<think>...</think>`` block from an answer.

    Reasoning models behind servers without a reasoning parser send their
    reasoning inline, before the answer. Feed the answer's pieces in order
    (tags may be split across pieces); :meth:`feed` returns the visible text of
    each piece, :meth:`flush` what is left at the end. An unterminated block
    yields nothing; text that does not start with ``<think>`` passes unchanged.
    """

    def __init__(self) -> None:
        self.mode = "start"
        self.buffer = ""

    def feed(self, text: str) -> str:
        if self.mode == "out":
            return text
        if self.mode == "after":  # the whitespace after </think> is not part of the answer
            text = text.lstrip()
            if text:
                self.mode = "out"
            return text
        self.buffer += text
        if self.mode == "start":
            head = self.buffer.lstrip()
            if len(head) < len("<think>") and "<think>".startswith(head):
                return ""
            if not head.startswith("<think>"):
                self.mode, out, self.buffer = "out", self.buffer, ""
                return out
            self.mode, self.buffer = "think", head[len("<think>"):]
        end = self.buffer.find("</think>")
        if end < 0:
            self.buffer = self.buffer[-len("</think>"):]
            return ""
        rest, self.buffer = self.buffer[end + len("</think>"):].lstrip(), ""
        self.mode = "out" if rest else "after"
        return rest

    def flush(self) -> str:
        out, self.buffer = (self.buffer if self.mode == "start" else ""), ""
        return out
