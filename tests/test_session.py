"""Properties of the session state machine (models.session)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from models.session import (
    Accepted,
    Click,
    Closed,
    Duplicate,
    Late,
    Output,
    SessionConfig,
    VisitorState,
    step,
    sweep,
)

GAP = 1800.0
CFG = SessionConfig(gap_s=GAP, late_tolerance_s=3600.0, cap=5, dedupe_ids=50)


def run(
    clicks: list[Click], cfg: SessionConfig = CFG
) -> tuple[VisitorState | None, list[list[Output]]]:
    state: VisitorState | None = None
    watermark = -math.inf
    outs: list[list[Output]] = []
    for c in clicks:
        state, o = step(state, c, cfg, watermark)
        watermark = max(watermark, c.ts)
        outs.append(o)
    return state, outs


def click(ts: float, item: str = "a", eid: str = "", visitor: str = "v") -> Click:
    return Click(visitor, item, ts, eid)


def test_exactly_at_the_gap_stays_in_the_session_and_just_over_splits() -> None:
    _, outs = run([click(1000.0), click(1000.0 + GAP)])
    assert isinstance(outs[1][-1], Accepted)
    assert not any(isinstance(o, Closed) for o in outs[1])
    _, outs = run([click(1000.0), click(1000.0 + GAP + 0.001)])
    closed = [o for o in outs[1] if isinstance(o, Closed)]
    assert len(closed) == 1 and closed[0].reason == "gap"
    first, second = outs[0][-1], outs[1][-1]
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert first.session_id != second.session_id
    assert second.position == 0 and second.context == ()


def test_duplicate_event_id_is_dropped_and_changes_nothing() -> None:
    state, _ = run([click(10.0, "a", "e1"), click(20.0, "b", "e2")])
    assert state is not None
    before = state.to_dict()
    state2, out = step(state, click(30.0, "c", "e1"), CFG, 20.0)
    assert out == [Duplicate(click(30.0, "c", "e1"))]
    assert state2.to_dict() == before


def test_late_click_goes_to_late_and_leaves_the_state() -> None:
    state, _ = run([click(10_000.0, "a")])
    assert state is not None
    before = state.to_dict()
    state2, out = step(state, click(10_000.0 - 3601.0, "x"), CFG, 10_000.0)
    assert len(out) == 1 and isinstance(out[0], Late)
    assert state2.to_dict() == before


def test_out_of_order_click_is_placed_by_event_time() -> None:
    state, outs = run([click(100.0, "a"), click(300.0, "c"), click(200.0, "b")])
    assert state is not None and state.session is not None
    assert state.session.items == ["a", "b", "c"]
    last = outs[-1][-1]
    assert isinstance(last, Accepted) and last.context == ("a",) and last.position == 1


def test_state_round_trips_through_json_dict() -> None:
    state, _ = run([click(1.0e9, "a", "e1"), click(1.0e9 + 5, "b")])
    assert state is not None
    assert VisitorState.from_dict(state.to_dict()) == state


def test_sweep_closes_on_watermark_and_on_wall_clock() -> None:
    state, _ = run([click(1000.0)])
    assert state is not None
    kept, closed = sweep(state, CFG, watermark=1000.0 + GAP)
    assert kept is state and closed == []
    gone, closed = sweep(state, CFG, watermark=1000.0 + GAP + 1)
    assert gone is None and [c.reason for c in closed] == ["idle"]
    state.last_seen_wall = 5.0
    gone, closed = sweep(state, CFG, watermark=1000.0, now_wall=5.0 + GAP + 1)
    assert gone is None and [c.reason for c in closed] == ["wallclock"]


# A stream for one visitor: time steps (some negative = out of order), items, and event ids
# drawn from a small pool so duplicates happen.
steps_st = st.lists(
    st.tuples(
        st.one_of(st.floats(-4000, 4000), st.sampled_from([GAP, GAP + 0.001, -GAP, 0.0])),
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        st.one_of(st.just(""), st.integers(0, 30).map(str)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps_st)
def test_no_click_lost_or_counted_twice(steps: list[tuple[float, str, str]]) -> None:
    ts = 1.0e9
    clicks = []
    for dt, item, eid in steps:
        ts += dt
        clicks.append(click(ts, item, eid))
    state, outs = run(clicks)
    accepted = late = dup = 0
    closed_clicks = 0
    session_ids: list[str] = []
    for o in outs:
        finals = [x for x in o if not isinstance(x, Closed)]
        assert len(finals) == 1, "every click has exactly one fate"
        for x in o:
            if isinstance(x, Closed):
                closed_clicks += x.session.n_clicks
                assert x.reason == "gap"
        f = finals[0]
        if isinstance(f, Accepted):
            accepted += 1
            if f.session_id not in session_ids:
                session_ids.append(f.session_id)
        elif isinstance(f, Late):
            late += 1
        else:
            assert isinstance(f, Duplicate)
            dup += 1
    assert accepted + late + dup == len(clicks)
    live = state.session.n_clicks if state and state.session else 0
    assert closed_clicks + live == accepted
    # Repeated event ids are duplicates unless the first one was rejected or forgotten.
    seen: set[str] = set()
    for c, o in zip(clicks, outs, strict=True):
        f = [x for x in o if not isinstance(x, Closed)][0]
        if c.event_id and c.event_id in seen:
            assert isinstance(f, Duplicate)
        if isinstance(f, Accepted) and c.event_id:
            seen.add(c.event_id)


@settings(max_examples=300, deadline=None)
@given(steps_st)
def test_sessions_respect_cap_order_and_gap(steps: list[tuple[float, str, str]]) -> None:
    ts = 1.0e9
    state: VisitorState | None = None
    watermark = -math.inf
    for dt, item, _ in steps:
        ts += dt
        state, outs = step(state, click(ts, item), CFG, watermark)
        watermark = max(watermark, ts)
        s = state.session
        if s is None:
            continue
        assert len(s.items) == len(s.times) <= CFG.cap
        assert s.times == sorted(s.times)
        assert s.start <= min(s.times) and s.end == max(s.times)
        # Within a live session no two consecutive clicks are more than the gap apart.
        assert all(b - a <= GAP for a, b in zip(s.times, s.times[1:], strict=False))
        for o in outs:
            if isinstance(o, Accepted):
                assert o.position < s.n_clicks
                assert len(o.context) <= CFG.cap


def test_redelivered_message_is_told_apart_from_a_producer_repeat() -> None:
    state, _ = step(None, Click("v", "a", 100.0, "e1", offset=41), CFG, 100.0)
    _, again = step(state, Click("v", "a", 100.0, "e1", offset=41), CFG, 100.0)
    _, repeat = step(state, Click("v", "a", 100.0, "e1", offset=42), CFG, 100.0)
    assert again == [Duplicate(Click("v", "a", 100.0, "e1", offset=41), redelivery=True)]
    assert repeat == [Duplicate(Click("v", "a", 100.0, "e1", offset=42), redelivery=False)]
