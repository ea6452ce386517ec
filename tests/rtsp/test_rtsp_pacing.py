"""The RTSP output's pacing: simulated sources against the frame-slot grid (no GStreamer)."""

from __future__ import annotations

from fractions import Fraction

from framelens.plugins.rtsp.pacing import Pacer

MS = 1_000_000


def simulate(stream_fps: int, arrivals_ms: list[float], until_ms: float,
             start_ms: float = 0.0) -> list[tuple[float, int, int, float]]:
    """Run a pacer as the feeder does; returns (send time, pts, frame seq, arrival of that frame) per frame."""
    pacer = Pacer(Fraction(stream_fps))
    sent: list[tuple[float, int, int, float]] = []
    now = start_ms
    seq, arrived = -1, [0.0]
    pending = sorted(arrivals_ms)
    while now < until_ms:
        while pending and pending[0] <= now:
            arrived.append(pending.pop(0))
            seq += 1
        spacing = int((arrived[-1] - arrived[-2]) * MS) if len(arrived) > 2 else None
        plan = pacer.plan(int(now * MS), seq, spacing)
        if plan.n is not None:
            pacer.sent(plan, seq)
            sent.append((now, plan.pts, seq, arrived[-1]))
        # Wake at the planned time or at the next arrival, whichever comes first.
        step = plan.wait_s * 1000
        if pending:
            step = min(step, pending[0] - now)
        now += max(step, 0.01)
    return sent


def first_sends(sent: list[tuple[float, int, int, float]]) -> list[float]:
    """How long each frame waited before its first send, in arrival order."""
    seen: dict[int, float] = {}
    for t, _, seq, arrived in sent:
        if seq >= 0 and seq not in seen:
            seen[seq] = t - arrived
    return [seen[k] for k in sorted(seen)]


def _checks(sent: list[tuple[float, int, int, float]]) -> None:
    pts = [p for _, p, _, _ in sent]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), "timestamps must increase"
    assert all(p <= t * MS for t, p, _, _ in sent), "a timestamp ran ahead of the clock"


def test_same_rate_source_goes_out_at_once_whatever_the_phase() -> None:
    for phase in (0.0, 5.0, 11.5, 20.0, 27.0, 33.0):
        arrivals = [phase + i * 1000 / 30 for i in range(90)]
        sent = simulate(30, arrivals, 3100)
        _checks(sent)
        delays = first_sends(sent)
        # After at most one move of the grid, every frame leaves when it arrives.
        assert max(delays[30:]) < 1.0, (phase, delays)
        assert len({seq for _, _, seq, _ in sent if seq >= 30}) == 60


def test_a_frame_that_waited_does_not_lock_the_next_ones_out() -> None:
    # The stream starts (first, placeholder frame) just before the source's frames.
    arrivals = [20 + i * 1000 / 30 for i in range(60)]
    sent = simulate(30, arrivals, 2000, start_ms=0.0)
    _checks(sent)
    assert max(first_sends(sent)[10:]) < 1.0


def test_a_faster_source_is_thinned_to_the_stream_rate() -> None:
    arrivals = [3 + i * 1000 / 60 for i in range(180)]
    sent = simulate(30, arrivals, 3000)
    _checks(sent)
    in_last_two_seconds = [s for s in sent if s[0] >= 1000]
    assert 58 <= len(in_last_two_seconds) <= 61
    assert max(t - arrived for t, _, _, arrived in in_last_two_seconds) <= 1000 / 30 + 1


def test_a_slower_source_is_repeated_to_keep_the_rate() -> None:
    arrivals = [7 + i * 1000 / 15 for i in range(45)]
    sent = simulate(30, arrivals, 3000)
    _checks(sent)
    in_last_two_seconds = [s for s in sent if s[0] >= 1000]
    assert 58 <= len(in_last_two_seconds) <= 61
    slots = {round((p - sent[0][1]) / (MS * 1000 / 30)) for _, p, _, _ in in_last_two_seconds}
    assert len(slots) == len(in_last_two_seconds)  # one frame per slot
    delays = first_sends(sent)
    assert len(delays) == 45 and max(delays[15:]) < 1.0  # real frames are not delayed by the repeats


def test_no_frames_at_all_still_streams() -> None:
    sent = simulate(25, [], 2000)
    _checks(sent)
    assert 48 <= len(sent) <= 51
    assert {seq for _, _, seq, _ in sent} == {-1}


def test_a_running_time_a_little_behind_never_makes_timestamps_go_back() -> None:
    pacer = Pacer(Fraction(30))
    plan = pacer.plan(500 * MS, 0, None)
    assert plan.n is not None
    pacer.sent(plan, 0)
    # The clock now says 420 ms: nothing may be sent before 500 ms.
    assert pacer.plan(420 * MS, 1, None).n is None
    later = pacer.plan(600 * MS, 1, 100 * MS)
    assert later.n is not None and later.pts > plan.pts and later.pts <= 600 * MS


def test_a_restarted_pipeline_starts_the_grid_over() -> None:
    pacer = Pacer(Fraction(30))
    for t in (5000, 5040, 5080):
        plan = pacer.plan(t * MS, t, 40 * MS)
        assert plan.n is not None
        pacer.sent(plan, t)
    # Running time begins at 0 again (the media was restarted): frames flow at once.
    plan = pacer.plan(10 * MS, 1, 40 * MS)
    assert plan.n is not None and plan.pts <= 10 * MS
