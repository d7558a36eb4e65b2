"""What the worker does with each message and each sweep, minus the Kafka calls.

The Faust agents in ``streams.app`` read messages and send what ``ClickHandler`` returns;
everything between (decode, dedupe, sessions, learning, suggestions, metrics) is here,
so it can be driven by the tests with a plain dict as the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from models.engine import Engine
from models.recommender import Recommendation
from models.session import Accepted, Click, Closed, Duplicate, Late, VisitorState
from streams import metrics as m
from streams.codec import (
    Limits,
    Rejection,
    decode_click,
    derived_event_id,
    dlq_headers,
    encode_recommendation,
    encode_session,
)
from streams.quality import OnlineQuality
from streams.settings import Settings

Table = MutableMapping[bytes, dict]
log = logging.getLogger("sessionrec")


@dataclass(frozen=True)
class Incoming:
    """One message read from the clicks topic."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    arrived: float | None = None
    """Wall time it reached the worker (None: now)."""


@dataclass(frozen=True)
class _Owed:
    """A click processed but for its suggestion, and what the suggestion needs."""

    incoming: Incoming
    click: Click
    state: VisitorState
    items: list[str]
    now: float
    accepted: Accepted | None
    """None: a redelivered message, answered again without being learned again."""
    before: list[Message] = field(default_factory=list)
    """Messages that go out before the suggestion (sessions this click closed)."""


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    click_arrived: float | None = None
    """Wall time the click this answers reached the worker (for the latency histogram)."""
    event_ts: float | None = None


@dataclass
class ClickHandler:
    settings: Settings
    engine: Engine
    quality: OnlineQuality = field(default_factory=OnlineQuality)
    watermarks: dict[int, float] = field(default_factory=dict)
    """Per input partition: the highest event time accepted so far."""
    positions: dict[int, int] = field(default_factory=dict)
    """Per input partition: the next offset to process (consumer lag is measured from it,
    not from what Faust has fetched into its buffers)."""
    index_watch: m.IndexWatch = field(default_factory=m.IndexWatch)
    _updates_seen: int = 0

    def handle(
        self, table: Table, key: bytes | None, value: bytes | None, topic: str, partition: int,
        offset: int, arrived: float | None = None, clock: float | None = None,
    ) -> list[Message]:
        """One message from the clicks topic -> messages to publish (in order)."""
        return self.handle_many(table, [Incoming(key, value, topic, partition, offset, arrived)], clock)

    def handle_many(self, table: Table, batch: Sequence[Incoming], clock: float | None = None
                    ) -> list[Message]:
        """Messages from the clicks topic, in order -> messages to publish, in order.

        Each click is decoded and sessioned in turn; the accepted ones are then learned, in
        order, in one compiled call (``Engine.learn_many``); then one ``recommend_many``
        answers every click of the batch that is owed a suggestion, each from its own
        session as it stood after that click. A click that fails goes to the DLQ alone.
        """
        slots: list[list[Message] | _Owed] = []
        for inc in batch:
            try:
                slots.append(self._step(table, inc, clock))
            except Exception as exc:  # noqa: BLE001 - one bad click must not stop the worker
                log.exception("click at %s/%d/%d failed", inc.topic, inc.partition, inc.offset)
                slots.append([self.failed(exc, inc)])
        self._learn(slots, time.monotonic() if clock is None else clock)
        owed = [s for s in slots if isinstance(s, _Owed)]
        recs: list[Recommendation | Exception] = []
        if owed:
            try:
                recs = list(self.engine.model.recommend_many([o.items for o in owed], self.engine.k))
            except Exception as exc:  # noqa: BLE001 - fail only the clicks waiting for it
                log.exception("recommending for %d clicks failed", len(owed))
                recs = [exc] * len(owed)
        answers = iter(recs)
        out: list[Message] = []
        for slot in slots:
            if isinstance(slot, list):
                out.extend(slot)
                continue
            rec = next(answers)
            if isinstance(rec, Exception):
                out.append(self.failed(rec, slot.incoming))
            else:
                out.extend(slot.before)
                out.append(self._answer(slot, rec))
        return out

    def _learn(self, slots: list[list[Message] | _Owed], clock: float) -> None:
        """Learn the batch's accepted clicks in one call. If that fails, each is learned alone,
        and a click that fails then goes to the DLQ in its slot (the call fails in its
        Python preparation, before any click is learned, so none is learned twice)."""
        accepted = [(i, (s.click.item_id, s.accepted.context)) for i, s in enumerate(slots)
                    if isinstance(s, _Owed) and s.accepted is not None]
        try:
            self.engine.learn_many([click for _, click in accepted], clock)
        except Exception:  # noqa: BLE001 - find the click, fail only it
            log.exception("learning a batch of %d clicks failed; learning each alone", len(accepted))
            for i, click in accepted:
                try:
                    self.engine.learn_many([click], clock)
                except Exception as exc:  # noqa: BLE001 - one bad click must not stop the worker
                    owed = slots[i]
                    assert isinstance(owed, _Owed)
                    slots[i] = [self.failed(exc, owed.incoming)]
        vec = self.engine.model.vectors
        m.SGD_UPDATES.inc(vec.updates - self._updates_seen)
        self._updates_seen = vec.updates
        m.TRAINING_LOSS.set(vec.loss_ema)
        self.index_watch.observe(self.engine.model, time.time())

    def _step(self, table: Table, inc: Incoming, clock: float | None) -> list[Message] | _Owed:
        """Everything for one click but its suggestion: messages, or what the suggestion needs."""
        key, value, topic, partition, offset = inc.key, inc.value, inc.topic, inc.partition, inc.offset
        self.positions[partition] = offset + 1
        now = time.time() if inc.arrived is None else inc.arrived
        decoded = decode_click(value, key, now, self.limits)
        if isinstance(decoded, Rejection):
            return [self._reject(decoded.reason, decoded.detail, inc)]
        click = Click(decoded.visitor_id, decoded.item_id, decoded.ts,
                      decoded.event_id or derived_event_id(topic, partition, offset), offset)
        assert key is not None
        raw_state = table.get(key)
        state = VisitorState.from_dict(raw_state) if raw_state is not None else None
        watermark = self.watermarks.get(partition, click.ts)
        res = self.engine.click(state, click, watermark,
                                clock=time.monotonic() if clock is None else clock,
                                now_wall=now, recommend=False, learn_later=True)
        before: list[Message] = []
        for o in res.outputs:
            if isinstance(o, Duplicate):
                if o.redelivery and res.owed:
                    assert res.state.session is not None
                    return _Owed(inc, click, res.state, list(res.state.session.items), now, None)
                m.CLICKS.labels(outcome="duplicate").inc()
                return before
            if isinstance(o, Late):
                return [self._reject("late", o.detail, inc)]
            if isinstance(o, Closed):
                before.append(self._closed(o))
        acc = res.accepted
        assert acc is not None and res.state.session is not None
        if state is None or state.session is None or res.closed:
            m.LIVE_SESSIONS.inc()
        self.watermarks[partition] = max(watermark, click.ts)
        d = res.state.to_dict()
        d["p"] = partition
        table[key] = d
        # The session's items now: a later click of the same visitor in this batch changes
        # the session in place.
        return _Owed(inc, click, res.state, list(res.state.session.items), now, acc, before)

    def _answer(self, owed: _Owed, rec: Recommendation) -> Message:
        click, acc = owed.click, owed.accepted
        if acc is None:  # the same message again: answered again, counted as such
            m.CLICKS.labels(outcome="redelivered").inc()
            return self._suggestion(click, owed.state, rec, owed.now)
        # A miss judges a list too (rank None): the gauges must move on misses as well.
        self.quality.clicked(click.visitor_id, acc.session_id, click.item_id)
        m.record_quality(self.quality)
        self.quality.served(click.visitor_id, acc.session_id, [i for i, _ in rec.items])
        m.MODEL_VERSION.set(rec.model_version)
        msg = self._suggestion(click, owed.state, rec, owed.now)
        # Counted last: a click that fails above goes to the DLQ as processing_error and
        # must not count as accepted too (one outcome per message).
        m.CLICKS.labels(outcome="accepted").inc()
        return msg

    @cached_property
    def limits(self) -> Limits:
        """Built once: the decoder reads them on every click."""
        return self.settings.limits()

    def _suggestion(self, click: Click, state: VisitorState, rec: Recommendation,
                    arrived: float) -> Message:
        m.RECOMMENDATIONS.labels(source=rec.source).inc()
        session_id = state.session.session_id if state.session is not None else ""
        return Message(
            self.settings.recommendations_topic, click.visitor_id.encode(),
            encode_recommendation(click.visitor_id, session_id, click.event_id, rec.items,
                                  rec.source, rec.model_version, time.time()),
            click_arrived=arrived, event_ts=click.ts,
        )

    def failed(self, exc: Exception, inc: Incoming) -> Message:
        """A click the worker could not process goes to the DLQ rather than vanishing."""
        return self._reject("processing_error", f"{type(exc).__name__}: {exc}"[:500], inc)

    def _reject(self, reason: str, detail: str, inc: Incoming) -> Message:
        m.CLICKS.labels(outcome=reason).inc()
        return Message(self.settings.dlq_topic, inc.key, inc.value,
                       dlq_headers(reason, detail, inc.topic, inc.partition, inc.offset))

    def _closed(self, closed: Closed) -> Message:
        m.SESSIONS_CLOSED.labels(reason=closed.reason).inc()
        m.SESSION_LENGTH.observe(closed.session.n_clicks)
        m.LIVE_SESSIONS.dec()
        return Message(self.settings.sessions_topic, closed.visitor_id.encode(),
                       encode_session(closed))

    def sweep(
        self, table: Table, now_wall: float | None = None, active: set[int] | None = None
    ) -> tuple[list[bytes], list[Message]]:
        """Close idle sessions. Returns (keys to delete, messages).

        ``active``: the input partitions this worker owns; the table may also hold standby
        copies of other workers' partitions, which are theirs to close."""
        now = time.time() if now_wall is None else now_wall
        deletes: list[bytes] = []
        out: list[Message] = []
        for key, raw in list(table.items()):
            if raw is None:
                continue
            partition = int(raw.get("p", -1))
            if active is not None and partition not in active:
                continue
            state = VisitorState.from_dict(raw)
            watermark = self.watermarks.get(partition, float("-inf"))
            new_state, closed = self.engine.sweep(state, watermark, now)
            for c in closed:
                out.append(self._closed(c))
                self.quality.forget(c.visitor_id)
            if new_state is None:
                deletes.append(key)
        return deletes, out

    def recount_live(self, table: Table, active: set[int] | None = None) -> int:
        """Live sessions after a recovery or rebalance (the gauge is otherwise incremental)."""
        n = sum(1 for v in table.values() if v is not None and v.get("s") is not None
                and (active is None or int(v.get("p", -1)) in active))
        m.LIVE_SESSIONS.set(n)
        return n
