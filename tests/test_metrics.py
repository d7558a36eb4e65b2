"""Each metric means what its help text says: ``ClickHandler`` driven with a plain dict as the
table, values read back from ``streams.metrics.REGISTRY`` and compared with counts made by
hand from the handler's own outputs. The registry is process-global, so counters are read as
deltas around the code under test."""

from __future__ import annotations

import importlib.metadata
import json
import random
from collections import Counter
from typing import Any

import pytest
from prometheus_client import generate_latest

from models.engine import Engine
from models.recommender import Recommender, RecommenderConfig
from streams import metrics as m
from streams.codec import REASONS
from streams.handler import ClickHandler, Incoming, Message
from streams.quality import OnlineQuality
from streams.settings import Settings

BASE = 1_700_000_000.0
GAP = 1800.0


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's current value; an absent series reads 0 (a counter not created yet)."""
    v = m.REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


class Deltas:
    """Counter values before a block, so a test can assert on what the block added."""

    def __init__(self, *series: tuple[str, dict[str, str] | None]) -> None:
        self.before = {(n, json.dumps(lb, sort_keys=True)): sample(n, lb) for n, lb in series}

    def __call__(self, name: str, labels: dict[str, str] | None = None) -> float:
        return sample(name, labels) - self.before[(name, json.dumps(labels, sort_keys=True))]


def make_handler(**overrides: object) -> ClickHandler:
    s = Settings.from_env({}, **overrides)
    return ClickHandler(s, Engine(s.session_config(), s.recommender_config(), k=s.k))


class Driver:
    """Feeds clicks to one handler as the Faust agent would, keeping offsets per partition."""

    def __init__(self, handler: ClickHandler) -> None:
        self.h = handler
        self.table: dict[bytes, dict[str, Any]] = {}
        self.offsets: Counter[int] = Counter()
        self.clock = 0.0

    def raw(self, key: bytes | None, value: bytes | None, partition: int = 0,
            arrived: float = BASE) -> list[Message]:
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        self.clock += 1.0  # past the refresh interval: every click may refresh the index
        return self.h.handle(self.table, key, value, "clicks", partition, offset,
                             arrived=arrived, clock=self.clock)

    def click(self, visitor: str, item: str, ts: float, event_id: str | None = None,
              partition: int = 0) -> list[Message]:
        body: dict[str, object] = {"visitor_id": visitor, "item_id": item, "ts": ts}
        if event_id is not None:
            body["event_id"] = event_id
        return self.raw(visitor.encode(), json.dumps(body).encode(), partition,
                        arrived=ts + 0.5)


def recs(out: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(o.value or b"") for o in out if o.topic == "recommendations"]


def test_click_outcomes_count_each_message_once() -> None:
    d = Driver(make_handler())
    outcomes = ("accepted", "duplicate", *REASONS)
    deltas = Deltas(*[("sessionrec_clicks_total", {"outcome": o}) for o in outcomes])
    want: Counter[str] = Counter()
    for i in range(5):
        d.click("v1", f"i{i}", BASE + 10 * i, event_id=f"e{i}")
        want["accepted"] += 1
    d.click("v1", "i4", BASE + 40, event_id="e4")  # same event id again
    want["duplicate"] += 1
    d.raw(b"v1", b'{"visitor_id": "v1", "item_id": ')
    want["invalid_json"] += 1
    d.raw(b"v1", json.dumps({"visitor_id": "v1", "ts": BASE}).encode())
    want["missing_field"] += 1
    d.raw(b"v2", json.dumps({"visitor_id": "v1", "item_id": "i", "ts": BASE}).encode())
    want["key_mismatch"] += 1
    d.raw(b"v1", None)
    want["empty_payload"] += 1
    # Move partition 0's watermark far ahead, then a click far behind it: late.
    d.click("v3", "i1", BASE + 10 * 86400, event_id="tick")
    want["accepted"] += 1
    d.click("v4", "i1", BASE + 100, event_id="old")
    want["late"] += 1
    d.h.failed(RuntimeError("boom"), Incoming(b"v1", b"{}", "clicks", 0, 99))
    want["processing_error"] += 1
    for outcome in outcomes:
        assert deltas("sessionrec_clicks_total", {"outcome": outcome}) == want[outcome], outcome


def test_dlq_messages_and_counter_agree() -> None:
    d = Driver(make_handler())
    deltas = Deltas(*[("sessionrec_clicks_total", {"outcome": r}) for r in REASONS])
    sent: Counter[str] = Counter()
    rng = random.Random(5)
    for _ in range(30):
        bad = rng.choice([b"[1]", b"{", b'{"visitor_id": "v", "item_id": 5, "ts": 1700000000}'])
        for o in d.raw(b"v", bad):
            assert o.topic == "clicks-dlq"
            sent[dict(o.headers or [])["sessionrec.reason"].decode()] += 1
    assert sum(sent.values()) == 30
    for reason in REASONS:
        assert deltas("sessionrec_clicks_total", {"outcome": reason}) == sent[reason]


def test_live_sessions_closed_sessions_and_lengths() -> None:
    d = Driver(make_handler())
    reasons = ("gap", "idle", "wallclock")
    deltas = Deltas(*[("sessionrec_sessions_closed_total", {"reason": r}) for r in reasons],
                    ("sessionrec_session_length_clicks_count", None),
                    ("sessionrec_session_length_clicks_sum", None),
                    ("sessionrec_session_length_clicks_bucket", {"le": "3.0"}))
    live0 = sample("sessionrec_live_sessions")
    lengths = {"a": 4, "b": 2, "c": 1}
    for v, n in lengths.items():
        for i in range(n):
            d.click(v, f"i{i}", BASE + 30 * i)
    assert sample("sessionrec_live_sessions") - live0 == 3
    # Visitor a comes back after more than the gap: a new session, the old one closes.
    out = d.click("a", "i9", BASE + 30 * 4 + GAP + 60)
    assert [o.topic for o in out].count("sessions") == 1
    assert sample("sessionrec_live_sessions") - live0 == 3
    assert deltas("sessionrec_sessions_closed_total", {"reason": "gap"}) == 1
    # Time passes: the sweep closes everything left.
    deletes, closed = d.h.sweep(d.table, now_wall=BASE + 10 * GAP)
    assert len(closed) == 3 and len(deletes) == 3
    assert sample("sessionrec_live_sessions") - live0 == 0
    closed_reasons = Counter(json.loads(c.value or b"")["close_reason"] for c in closed)
    for r in ("idle", "wallclock"):
        assert deltas("sessionrec_sessions_closed_total", {"reason": r}) == closed_reasons[r]
    # Lengths of the closed sessions: a's first (4), then b (2), c (1), a's second (1).
    closed_lengths = [4, 2, 1, 1]
    assert deltas("sessionrec_session_length_clicks_count") == len(closed_lengths)
    assert deltas("sessionrec_session_length_clicks_sum") == sum(closed_lengths)
    assert deltas("sessionrec_session_length_clicks_bucket", {"le": "3.0"}) == sum(
        1 for n in closed_lengths if n <= 3)
    # After a rebalance the gauge is rebuilt from the table, not from increments.
    for key in list(d.table):
        del d.table[key]
    d.click("z", "i1", BASE + 20 * GAP)
    assert d.h.recount_live(d.table) == 1
    assert sample("sessionrec_live_sessions") == 1


def sequential_stream(rng: random.Random, visitors: int, sessions: int,
                      length: int) -> list[tuple[str, str, float]]:
    """Clicks that mostly walk a ring of items (i -> i+1), so the model learns to hit."""
    out: list[tuple[str, str, float]] = []
    for v in range(visitors):
        t = BASE + rng.random() * 600
        for _ in range(sessions):
            item = rng.randrange(30)
            for _ in range(length):
                out.append((f"visitor-{v}", f"item-{item}", t))
                item = (item + 1) % 30 if rng.random() < 0.8 else rng.randrange(30)
                t += rng.uniform(5, 60)
            t += GAP + 100
    out.sort(key=lambda c: c[2])
    return out


def test_online_hit_rate_and_mrr_equal_a_hand_count() -> None:
    h = make_handler()
    d = Driver(h)
    deltas = Deltas(("sessionrec_online_judged_total", None))
    last: dict[str, tuple[str, list[str]]] = {}
    ranks: list[int | None] = []
    stream = sequential_stream(random.Random(1), 25, 3, 8)
    for n, (v, item, ts) in enumerate(stream):
        for r in recs(d.click(v, item, ts, event_id=f"e{n}")):
            shown = last.get(v)
            if shown is not None and shown[0] == r["session_id"]:
                ranks.append(shown[1].index(item) + 1 if item in shown[1] else None)
            last[v] = (r["session_id"], [x["item_id"] for x in r["items"]])
    # The last visitor clicks once more, on an item nobody clicked before: a sure miss in the
    # same session. The gauges must move on a miss too, not only on hits.
    v, _, ts = stream[-1]
    (r,) = recs(d.click(v, "never-seen-item", ts + 1, event_id="miss"))
    assert r["session_id"] == last[v][0]
    ranks.append(None)
    assert len(ranks) > 100
    hits = {k: sum(1 for r in ranks if r is not None and r <= k) for k in (10, 20)}
    assert 0 < hits[20] < len(ranks)  # the stream is neither hopeless nor trivial
    assert deltas("sessionrec_online_judged_total") == len(ranks)
    for k in (10, 20):
        want_hr = hits[k] / len(ranks)
        want_mrr = sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks)
        assert sample("sessionrec_online_hit_rate", {"k": str(k)}) == pytest.approx(want_hr)
        assert sample("sessionrec_online_mrr", {"k": str(k)}) == pytest.approx(want_mrr)
    assert sample("sessionrec_online_window_lists") == len(ranks)


def test_a_batch_answers_in_click_order_and_judges_each_list_once() -> None:
    """Clicks handled in batches (several of one visitor in one batch, a bad one among
    them): one message per click in input order, and the online gauges count exactly the
    lists the visitors were shown, as when handled one at a time."""
    h = make_handler()
    deltas = Deltas(("sessionrec_online_judged_total", None))
    stream = sequential_stream(random.Random(2), 12, 4, 8)
    batch = [Incoming(v.encode(), json.dumps({"visitor_id": v, "item_id": item, "ts": ts,
                                               "event_id": f"e{n}"}).encode(), "clicks", 0, n,
                      arrived=ts + 0.5) for n, (v, item, ts) in enumerate(stream)]
    batch.insert(5, Incoming(b"bad", b"{not json", "clicks", 0, 10_000))
    out: list[Message] = []
    table: dict[bytes, dict[str, Any]] = {}
    for lo in range(0, len(batch), 7):
        out += h.handle_many(table, batch[lo : lo + 7], clock=float(lo))
    dlq = [msg for msg in out if msg.topic == "clicks-dlq"]
    assert len(dlq) == 1 and dlq[0].value == b"{not json"
    answered = recs(out)
    assert [r["event_id"] for r in answered] == [f"e{n}" for n in range(len(stream))]
    last: dict[str, tuple[str, list[str]]] = {}
    ranks: list[int | None] = []
    for r, (v, item, _) in zip(answered, stream, strict=True):
        shown = last.get(v)
        if shown is not None and shown[0] == r["session_id"]:
            ranks.append(shown[1].index(item) + 1 if item in shown[1] else None)
        last[v] = (r["session_id"], [x["item_id"] for x in r["items"]])
    assert deltas("sessionrec_online_judged_total") == len(ranks) > 20
    want_hr = sum(1 for r in ranks if r is not None and r <= 20) / len(ranks)
    assert sample("sessionrec_online_hit_rate", {"k": "20"}) == pytest.approx(want_hr)


def test_recommendations_by_source_and_model_gauges() -> None:
    deltas = Deltas(("sessionrec_recommendations_total", {"source": "model"}),
                    ("sessionrec_recommendations_total", {"source": "fallback"}),
                    ("sessionrec_sgd_updates_total", None))
    sources: Counter[str] = Counter()
    # A worker that may use no session item in its query answers from popularity only.
    popular_only = Driver(make_handler(query_items=0))
    for n, (v, item, ts) in enumerate(sequential_stream(random.Random(3), 5, 1, 4)):
        for r in recs(popular_only.click(v, item, ts, event_id=f"e{n}")):
            sources[r["source"]] += 1
    h = make_handler()
    d = Driver(h)
    for n, (v, item, ts) in enumerate(sequential_stream(random.Random(2), 10, 2, 6)):
        for r in recs(d.click(v, item, ts, event_id=f"e{n}")):
            sources[r["source"]] += 1
    assert sources["model"] > 0 and sources["fallback"] > 0
    for src in ("model", "fallback"):
        assert deltas("sessionrec_recommendations_total", {"source": src}) == sources[src]
    vec = h.engine.model.vectors
    first = popular_only.h.engine.model.vectors.updates
    assert deltas("sessionrec_sgd_updates_total") == first + vec.updates
    assert sample("sessionrec_training_loss") == pytest.approx(vec.loss_ema)
    assert sample("sessionrec_vocabulary_items") == len(vec)
    assert sample("sessionrec_model_version") == vec.version
    assert sample("sessionrec_index_items") == len(h.engine.model.index)


def test_index_refresh_histogram_counts_refreshes_not_seconds() -> None:
    h = make_handler()
    d = Driver(h)
    deltas = Deltas(("sessionrec_index_refresh_seconds_count", None))
    index = h.engine.model.index
    refreshes = 0
    for n, (v, item, ts) in enumerate(sequential_stream(random.Random(4), 6, 1, 5)):
        before = index.inserts
        d.click(v, item, ts, event_id=f"e{n}")
        refreshes += index.inserts != before
        # Observing again without a refresh in between adds nothing.
        h.index_watch.observe(h.engine.model, ts)
    assert refreshes > 0
    assert deltas("sessionrec_index_refresh_seconds_count") == refreshes


def test_index_staleness_is_the_age_of_the_oldest_pending_change() -> None:
    model = Recommender()
    watch = m.IndexWatch()
    assert watch.observe(model, 100.0) == 0.0  # nothing learned: up to date
    model.learn("b", ("a",))
    assert watch.observe(model, 100.0) == 0.0  # the change is dated now
    model.learn("c", ("b",))  # a later change does not make the older one younger
    assert watch.observe(model, 130.0) == 30.0
    assert sample("sessionrec_index_staleness_seconds") == 30.0
    model.refresh()
    assert watch.observe(model, 140.0) == 0.0
    assert sample("sessionrec_index_staleness_seconds") == 0.0
    assert sample("sessionrec_index_items") == len(model.index) > 0
    # Idle afterwards: nothing pending, so no staleness however long it stays quiet.
    assert watch.observe(model, 10_000.0) == 0.0


def test_staleness_counts_a_refresh_until_its_last_part_is_written() -> None:
    """A refresh written in parts (``refresh_spread``) leaves its rows unindexed until the
    last part: staleness is dated from their first change, not from the take."""
    model = Recommender(RecommenderConfig(refresh_interval_s=10.0, refresh_spread=0.5))
    watch = m.IndexWatch()
    model.maybe_refresh(93.0)  # nothing to take yet
    model.learn_many([("b", ("a",)), ("c", ("b",)), ("d", ("c",))])
    assert watch.observe(model, 100.0) == 0.0
    model.maybe_refresh(102.9)  # not due; the batches come every 0.1 s
    model.maybe_refresh(103.0)  # taken; nothing written yet
    assert model.indexing and model.vectors.changed == 0
    assert watch.observe(model, 103.0) == 3.0
    model.learn("e", ("d",))  # a newer change does not make the taken rows younger
    model.maybe_refresh(104.0)  # a fifth of the spread: a part
    assert model.indexing
    assert watch.observe(model, 104.0) == 4.0
    model.maybe_refresh(108.0)  # the last part: the new change is the oldest pending one
    assert not model.indexing
    assert watch.observe(model, 108.0) == 4.0
    model.refresh()
    assert watch.observe(model, 109.0) == 0.0


def test_drift_counter_follows_adwin() -> None:
    q = OnlineQuality(ks=(20,))
    deltas = Deltas(("sessionrec_quality_drift_total", None), ("sessionrec_online_judged_total", None))
    rng = random.Random(9)
    for n in range(4000):
        rate = 0.7 if n < 2000 else 0.1
        q.served("v", "s", ["good"])
        q.clicked("v", "s", "good" if rng.random() < rate else "bad")
        m.record_quality(q)
    assert len(q.drifts) >= 1
    assert deltas("sessionrec_quality_drift_total") == len(q.drifts)
    assert deltas("sessionrec_online_judged_total") == 4000


def test_consumer_lag_series_follow_the_assignment() -> None:
    assert m.partition_lag(120, 100) == 20
    assert m.partition_lag(120, None) == 120  # nothing processed or committed
    assert m.partition_lag(100, 120) == 0  # a high-water mark read before the last fetch
    m.set_consumer_lag({("clicks", 0): 5, ("clicks", 1): 7})
    assert sample("sessionrec_consumer_lag", {"topic": "clicks", "partition": "1"}) == 7
    m.set_consumer_lag({("clicks", 0): 2})  # partition 1 was revoked
    assert sample("sessionrec_consumer_lag", {"topic": "clicks", "partition": "0"}) == 2
    assert m.REGISTRY.get_sample_value(
        "sessionrec_consumer_lag", {"topic": "clicks", "partition": "1"}) is None
    m.set_consumer_lag({})


def test_build_info_names_and_no_ids_in_labels() -> None:
    m.init_labels()
    assert sample("sessionrec_build_info", {
        "version": importlib.metadata.version("sessionrec")}) == 1.0
    d = Driver(make_handler())
    ids: set[str] = set()
    for n, (v, item, ts) in enumerate(sequential_stream(random.Random(6), 8, 1, 4)):
        d.click(v, item, ts, event_id=f"ev-{n}")
        ids.update((v, item, f"ev-{n}"))
    text = generate_latest(m.REGISTRY).decode()
    ours = [line for line in text.splitlines()
            if line and not line.startswith("#") and "sessionrec" in line]
    assert ours
    for line in ours:
        assert line.startswith("sessionrec_"), line
        labels = line.split("{", 1)[1].rsplit("}", 1)[0] if "{" in line else ""
        values = {part.split("=", 1)[1].strip('"') for part in labels.split(",") if "=" in part}
        assert not values & ids, line
