"""The per-visitor session state machine: a pure function ``(state, click) -> (state, outputs)``.

Nothing here touches Kafka or Faust. The worker keeps one ``VisitorState`` per visitor in a
changelog-backed table; the offline replay keeps them in a dict. Both call the same two
functions, ``step`` (a click arrives) and ``sweep`` (time passes), so the replay and the
worker cannot disagree about where a session starts or ends.

States are plain JSON-able data (``to_dict``/``from_dict``) because the Faust table stores
them as JSON in its changelog topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CloseReason = Literal["gap", "idle", "wallclock"]
"""Why a session closed: ``gap`` - the visitor clicked again after more than the gap;
``idle`` - the partition's event-time watermark passed the last click by more than the gap;
``wallclock`` - no click from the visitor arrived for more than the gap of wall time."""


@dataclass(frozen=True)
class SessionConfig:
    """Settings of the state machine (constructor arguments are the settings)."""

    gap_s: float = 1800.0
    """A click more than this many seconds after the visitor's previous click starts a new session."""
    late_tolerance_s: float = 3600.0
    """A click older than the partition watermark by more than this is rejected as ``late``."""
    cap: int = 200
    """At most this many recent clicks are kept per session as context."""
    dedupe_ids: int = 256
    """How many recent event ids per visitor are remembered to drop duplicates."""


@dataclass(frozen=True)
class Click:
    """A validated click, as produced by the decoder."""

    visitor_id: str
    item_id: str
    ts: float
    event_id: str
    offset: int = -1
    """Position of the message in its partition, when it came from Kafka (-1 otherwise)."""


@dataclass
class Session:
    """A visitor's live session: its recent clicks in event-time order."""

    session_id: str
    start: float
    end: float
    items: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    n_clicks: int = 0
    """Clicks accepted into this session, including any dropped from the context by the cap."""


@dataclass
class VisitorState:
    """Everything the worker keeps for one visitor."""

    visitor_id: str
    session: Session | None = None
    recent_event_ids: list[str] = field(default_factory=list)
    recent_offsets: list[int] = field(default_factory=list)
    """The input offset each of ``recent_event_ids`` was accepted from (same order)."""
    last_seen_wall: float = 0.0
    """Wall-clock time the visitor's last click arrived at the worker (for the live-stream sweep)."""

    def to_dict(self) -> dict[str, Any]:
        s = self.session
        return {
            "v": self.visitor_id,
            "ids": self.recent_event_ids,
            "offs": self.recent_offsets,
            "wall": self.last_seen_wall,
            "s": None
            if s is None
            else {
                "id": s.session_id,
                "start": s.start,
                "end": s.end,
                "items": s.items,
                "times": s.times,
                "n": s.n_clicks,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VisitorState:
        s = d.get("s")
        session = (
            None
            if s is None
            else Session(
                session_id=s["id"],
                start=float(s["start"]),
                end=float(s["end"]),
                items=list(s["items"]),
                times=[float(t) for t in s["times"]],
                n_clicks=int(s["n"]),
            )
        )
        return cls(
            visitor_id=d["v"],
            session=session,
            recent_event_ids=list(d.get("ids", [])),
            recent_offsets=[int(o) for o in d.get("offs", [])],
            last_seen_wall=float(d.get("wall", 0.0)),
        )


@dataclass(frozen=True)
class Accepted:
    """The click joined the visitor's live session at ``position`` (0-based, by event time)."""

    click: Click
    session_id: str
    position: int
    context: tuple[str, ...]
    """The session's items before this click (at most the cap), oldest first."""


@dataclass(frozen=True)
class Duplicate:
    """The event id was accepted before. ``redelivery``: it is the very message accepted
    before (same offset), read again after a crash or rebalance, not a producer's repeat."""

    click: Click
    redelivery: bool = False


@dataclass(frozen=True)
class Late:
    click: Click
    detail: str


@dataclass(frozen=True)
class Closed:
    visitor_id: str
    session: Session
    reason: CloseReason


Output = Accepted | Duplicate | Late | Closed


def session_id_for(visitor_id: str, start: float) -> str:
    """A stable id: the same clicks replayed give the same session ids."""
    return f"{visitor_id}@{int(round(start * 1000))}"


def step(
    state: VisitorState | None,
    click: Click,
    cfg: SessionConfig,
    watermark: float,
    now_wall: float = 0.0,
) -> tuple[VisitorState, list[Output]]:
    """Apply one click to a visitor's state.

    ``watermark`` is the highest event time seen so far on the click's partition (before this
    click). Returns the new state and what happened, in order: possibly a ``Closed`` for the
    previous session, then exactly one of ``Accepted``, ``Duplicate`` or ``Late``.
    """
    if state is None:
        state = VisitorState(visitor_id=click.visitor_id)
    if click.event_id and click.event_id in state.recent_event_ids:
        j = state.recent_event_ids.index(click.event_id)
        offs = state.recent_offsets
        again = click.offset >= 0 and j < len(offs) and offs[j] == click.offset
        return state, [Duplicate(click, redelivery=again)]
    if watermark - click.ts > cfg.late_tolerance_s:
        return state, [
            Late(click, f"event time {watermark - click.ts:.0f}s behind the partition watermark")
        ]
    outputs: list[Output] = []
    session = state.session
    if session is not None and click.ts < session.start - cfg.gap_s:
        return state, [
            Late(click, "older than the visitor's live session by more than the session gap")
        ]
    if session is not None and click.ts - session.end > cfg.gap_s:
        outputs.append(Closed(state.visitor_id, session, "gap"))
        session = None
    if session is None:
        session = Session(session_id=session_id_for(click.visitor_id, click.ts), start=click.ts,
                          end=click.ts)
    # Insert in event-time order; a click equal in time to earlier ones goes after them.
    pos = len(session.times)
    while pos > 0 and session.times[pos - 1] > click.ts:
        pos -= 1
    context = tuple(session.items[:pos])
    session.items.insert(pos, click.item_id)
    session.times.insert(pos, click.ts)
    session.start = min(session.start, click.ts)
    session.end = max(session.end, click.ts)
    position = session.n_clicks - (len(session.items) - 1 - pos)
    session.n_clicks += 1
    if len(session.items) > cfg.cap:
        drop = len(session.items) - cfg.cap
        del session.items[:drop]
        del session.times[:drop]
    state.session = session
    state.last_seen_wall = now_wall
    if click.event_id:
        if len(state.recent_offsets) != len(state.recent_event_ids):
            state.recent_offsets = [-1] * len(state.recent_event_ids)
        state.recent_event_ids.append(click.event_id)
        state.recent_offsets.append(click.offset)
        if len(state.recent_event_ids) > cfg.dedupe_ids:
            drop = len(state.recent_event_ids) - cfg.dedupe_ids
            del state.recent_event_ids[:drop]
            del state.recent_offsets[:drop]
    outputs.append(Accepted(click, session.session_id, position, context[-cfg.cap :]))
    return state, outputs


def sweep(
    state: VisitorState,
    cfg: SessionConfig,
    watermark: float,
    now_wall: float | None = None,
) -> tuple[VisitorState | None, list[Closed]]:
    """Close the visitor's session if it has been idle for longer than the gap.

    Idle is judged in event time against the partition ``watermark`` and, when ``now_wall``
    is given, in wall-clock time since the visitor's last click arrived (a live stream whose
    visitors went away has no newer events to move the watermark). Returns ``None`` as the
    state when nothing is left to keep for the visitor.
    """
    session = state.session
    if session is None:
        return None, []
    reason: CloseReason | None = None
    if watermark - session.end > cfg.gap_s:
        reason = "idle"
    elif now_wall is not None and now_wall - state.last_seen_wall > cfg.gap_s:
        reason = "wallclock"
    if reason is None:
        return state, []
    return None, [Closed(state.visitor_id, session, reason)]
