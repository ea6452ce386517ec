"""When the RTSP output sends a frame, and with which timestamp (pure logic, no GStreamer)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Pacer", "Plan"]

SECOND = 1_000_000_000
# A slot with no new frame by this fraction of its time repeats the last frame; late,
# so that a frame arriving late in its slot still goes out at once.
REPEAT_AT = Fraction(4, 5)
# Waiting this little (fraction of a frame) for the next slot is not worth moving the grid.
SHORT_WAIT = Fraction(1, 10)
# New frames closer together than this (in frames) come from a faster source: they are
# thinned to the frame rate, not a reason to move the grid.
SAME_RATE = Fraction(3, 4)
# A running time this far (ns) behind the last timestamp means the pipeline started over.
RESTARTED = SECOND


@dataclass(frozen=True)
class Plan:
    """Send now with ``pts`` in slot ``n`` (when ``n`` is not None); look again in ``wait_s``."""

    n: int | None
    pts: int
    wait_s: float


class Pacer:
    """Frame slots of one media: one frame per slot of the frame-rate grid, never late.

    Timestamps are slot starts on a grid in the media's running time, so players see a
    constant frame rate, and never lie ahead of the clock (the RTSP server's sinks wait
    for them). A new frame goes out at once when its slot is free. A source running at
    the stream's rate whose frames keep landing in already-used slots (the grid's phase
    is unlucky) would wait up to a frame each time; the grid is then moved once so its
    frames land early in their slots. A slot that gets no new frame repeats the last one.
    """

    def __init__(self, rate: Fraction) -> None:
        self.slot_ns = Fraction(SECOND) / rate
        self.offset = 0  # running time (ns) where slot 0 starts
        self.last_n = -1
        self.last_pts = -1
        self.seq = -1  # the frame (caller's sequence number) last sent

    def _slot(self, running: int) -> tuple[int, Fraction]:
        position = (running - self.offset) / self.slot_ns
        n = int(position // 1)
        return n, position - n

    def _pts(self, n: int) -> int:
        return self.offset + int(n * self.slot_ns)

    def _wait(self, frames: Fraction) -> float:
        return float(frames * self.slot_ns) / SECOND

    def plan(self, running: int, seq: int, spacing: int | None) -> Plan:
        """What to do at ``running`` (ns) when the newest frame is ``seq``; ``spacing`` is
        the time (ns) between the two newest frames' arrivals, if known."""
        if running <= self.last_pts:
            if self.last_pts - running > RESTARTED:
                # The pipeline was restarted (its running time begins at 0 again, after a
                # flush): start the grid over.
                self.offset, self.last_n, self.last_pts = 0, -1, -1
            else:
                # Never send a timestamp that is not the largest yet.
                return Plan(None, 0, (self.last_pts - running) / SECOND + 0.001)
        n, into = self._slot(running)
        if self.last_n < 0 or (n > self.last_n and seq != self.seq):
            return Plan(n, self._pts(n), self._wait(1 - into))
        if seq != self.seq:
            wait = 1 - into  # this slot already has a frame: the next one starts in `wait`
            if (wait <= SHORT_WAIT or into < SHORT_WAIT or spacing is None
                    or spacing < SAME_RATE * self.slot_ns):
                return Plan(None, 0, self._wait(wait))
            # Move the grid so that now is just after the start of the next slot.
            early = min(Fraction(1, 5), into / 2)
            n = self.last_n + 1
            self.offset = running - int((n + early) * self.slot_ns)
            return Plan(n, self._pts(n), self._wait(1 - early))
        if n > self.last_n and into >= REPEAT_AT:
            return Plan(n, self._pts(n), self._wait(1 - into))
        if n > self.last_n:
            return Plan(None, 0, self._wait(REPEAT_AT - into))
        return Plan(None, 0, self._wait(self.last_n - n + 1 - into + REPEAT_AT))

    def sent(self, plan: Plan, seq: int) -> None:
        """The planned frame was queued."""
        assert plan.n is not None
        self.last_n, self.last_pts, self.seq = plan.n, plan.pts, seq

    def skipped(self, plan: Plan) -> None:
        """The encoder was behind and the frame was dropped: the slot is given up."""
        assert plan.n is not None
        self.last_n = max(self.last_n, plan.n)
