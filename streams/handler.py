"""What the worker does with each message and each sweep, minus the Kafka calls.

The Faust agents in ``streams.app`` read messages and send what ``ClickHandler`` returns;
everything between (decode, dedupe, sessions, learning, suggestions, metrics) is here,
so it can be driven by the tests with a plain dict as the table.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from functools import cached_property

from models.engine import Engine
from models.recommender import Recommendation
from models.session import Click, Closed, Duplicate, Late, VisitorState
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
        self.positions[partition] = offset + 1
        now = time.time() if arrived is None else arrived
        decoded = decode_click(value, key, now, self.limits)
        if isinstance(decoded, Rejection):
            return [self._reject(decoded.reason, decoded.detail, key, value, topic, partition,
                                 offset)]
        click = Click(decoded.visitor_id, decoded.item_id, decoded.ts,
                      decoded.event_id or derived_event_id(topic, partition, offset), offset)
        assert key is not None
        raw_state = table.get(key)
        state = VisitorState.from_dict(raw_state) if raw_state is not None else None
        watermark = self.watermarks.get(partition, click.ts)
        res = self.engine.click(state, click, watermark,
                                clock=time.monotonic() if clock is None else clock,
                                now_wall=now)
        out: list[Message] = []
        for o in res.outputs:
            if isinstance(o, Duplicate):
                if o.redelivery and res.recommendation is not None:
                    m.CLICKS.labels(outcome="redelivered").inc()
                    return [self._suggestion(click, res.state, res.recommendation, now)]
                m.CLICKS.labels(outcome="duplicate").inc()
                return out
            if isinstance(o, Late):
                return [self._reject("late", o.detail, key, value, topic, partition, offset)]
            if isinstance(o, Closed):
                out.append(self._closed(o))
        acc, rec = res.accepted, res.recommendation
        assert acc is not None and rec is not None
        if state is None or state.session is None or res.closed:
            m.LIVE_SESSIONS.inc()
        self.watermarks[partition] = max(watermark, click.ts)
        d = res.state.to_dict()
        d["p"] = partition
        table[key] = d
        # A miss judges a list too (rank None): the gauges must move on misses as well.
        self.quality.clicked(click.visitor_id, acc.session_id, click.item_id)
        m.record_quality(self.quality)
        self.quality.served(click.visitor_id, acc.session_id, [i for i, _ in rec.items])
        vec = self.engine.model.vectors
        m.SGD_UPDATES.inc(vec.updates - self._updates_seen)
        self._updates_seen = vec.updates
        m.TRAINING_LOSS.set(vec.loss_ema)
        m.MODEL_VERSION.set(rec.model_version)
        self.index_watch.observe(self.engine.model, time.time())
        out.append(self._suggestion(click, res.state, rec, now))
        # Counted last: a click that fails above goes to the DLQ as processing_error and
        # must not count as accepted too (one outcome per message).
        m.CLICKS.labels(outcome="accepted").inc()
        return out

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

    def failed(self, exc: Exception, key: bytes | None, value: bytes | None, topic: str,
               partition: int, offset: int) -> Message:
        """A click the worker could not process goes to the DLQ rather than vanishing."""
        return self._reject("processing_error", f"{type(exc).__name__}: {exc}"[:500], key, value,
                            topic, partition, offset)

    def _reject(self, reason: str, detail: str, key: bytes | None, value: bytes | None,
                topic: str, partition: int, offset: int) -> Message:
        m.CLICKS.labels(outcome=reason).inc()
        return Message(self.settings.dlq_topic, key, value,
                       dlq_headers(reason, detail, topic, partition, offset))

    def _closed(self, closed: Closed) -> Message:
        m.SESSIONS_CLOSED.labels(reason=closed.reason).inc()
        m.SESSION_LENGTH.observe(closed.session.n_clicks)
        m.LIVE_SESSIONS.dec()
        return Message(self.settings.sessions_topic, closed.visitor_id.encode(),
                       encode_session(closed))

    def sweep(
        self, table: Table, now_wall: float | None = None, active: set[int] | None = None
    ) -> tuple[list[tuple[bytes, int]], list[Message]]:
        """Close idle sessions. Returns (keys to delete with their partition, messages).

        ``active``: the input partitions this worker owns; the table may also hold standby
        copies of other workers' partitions, which are theirs to close."""
        now = time.time() if now_wall is None else now_wall
        deletes: list[tuple[bytes, int]] = []
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
                deletes.append((key, partition))
        return deletes, out

    def recount_live(self, table: Table, active: set[int] | None = None) -> int:
        """Live sessions after a recovery or rebalance (the gauge is otherwise incremental)."""
        n = sum(1 for v in table.values() if v is not None and v.get("s") is not None
                and (active is None or int(v.get("p", -1)) in active))
        m.LIVE_SESSIONS.set(n)
        return n
