"""End to end on the real broker: kafka-python in, a Faust worker, kafka-python out."""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from streams.local import LocalStack
from streams.produce import make_producer
from streams.watch import read_records

pytestmark = pytest.mark.broker

GAP = 1800.0
SCHEMAS = Path(__file__).resolve().parent.parent / "streams" / "schemas"


def validator(topic: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def build_stream(rng: random.Random, base: float) -> tuple[list[dict], list[list[str]]]:
    """Visitors with 1-3 sessions each; clicks 5-60 s apart inside a session, sessions more
    than the gap apart. Returns the clicks in time order and the expected sessions as lists
    of event ids."""
    clicks: list[dict] = []
    sessions: list[list[str]] = []
    n = 0
    for v in range(160):
        t = base + rng.random() * 3600
        for _ in range(rng.randint(1, 3)):
            ids = []
            for _ in range(rng.randint(2, 12)):
                eid = f"e{n}"
                n += 1
                clicks.append({"visitor_id": f"visitor-{v}", "item_id": f"item-{rng.randint(0, 150)}",
                               "ts": round(t, 3), "event_id": eid})
                ids.append(eid)
                t += rng.uniform(5, 60)
            sessions.append(ids)
            t += GAP + rng.uniform(1, 3600)
    clicks.sort(key=lambda c: c["ts"])
    return clicks, sessions


def test_clicks_to_suggestions_sessions_and_dlq(stack: LocalStack) -> None:
    rng = random.Random(7)
    now = time.time()
    base = now - 3 * 86400
    clicks, expected_sessions = build_stream(rng, base)
    max_ts = max(c["ts"] for c in clicks)
    worker = stack.start_worker("it")
    producer = make_producer(stack.address)
    worker.wait_ready(timeout=180)

    bad: dict[bytes, str] = {}

    def send_bad(value: bytes, reason: str, key: bytes | None = b"visitor-0") -> None:
        bad[value] = reason
        producer.send("clicks", key=key, value=value)

    duplicates = 0
    for n, c in enumerate(clicks):
        producer.send("clicks", key=c["visitor_id"].encode(), value=json.dumps(c).encode())
        if n % 50 == 7:  # a producer retry: same event id again
            producer.send("clicks", key=c["visitor_id"].encode(), value=json.dumps(c).encode())
            duplicates += 1
        if n % 200 == 3:
            k = n
            send_bad(b'{"visitor_id": "visitor-0", "item_id": ' + str(k).encode(), "invalid_json")
            send_bad(json.dumps({"visitor_id": "visitor-0", "ts": c["ts"], "k": k}).encode(),
                     "missing_field")
            send_bad(json.dumps({"visitor_id": "visitor-0", "item_id": 5, "ts": c["ts"],
                                 "k": k}).encode(), "wrong_type")
            send_bad(json.dumps({"visitor_id": "visitor-0", "item_id": "", "ts": c["ts"],
                                 "k": k}).encode(), "invalid_id")
            send_bad(json.dumps({"visitor_id": "visitor-0", "item_id": "i", "ts": 3.0,
                                 "k": k}).encode(), "timestamp_too_old")
            send_bad(json.dumps({"visitor_id": "visitor-0", "item_id": "i", "ts": now + 86400,
                                 "k": k}).encode(), "timestamp_in_future")
            send_bad(json.dumps({"visitor_id": "visitor-1", "item_id": "i", "ts": c["ts"],
                                 "k": k}).encode(), "key_mismatch")
            send_bad(json.dumps({"visitor_id": "visitor-0", "item_id": "i", "ts": c["ts"],
                                 "pad": "x" * 5000, "k": k}).encode(), "payload_too_large")
            send_bad(b"[" + str(k).encode() + b"]", "not_an_object")
    # Move every partition's event-time watermark past the gap so idle sessions close, then
    # one click far older than the watermark: late.
    ticks = [{"visitor_id": f"tick-{i}", "item_id": "item-1", "ts": max_ts + 2 * GAP,
              "event_id": f"tick-{i}"} for i in range(40)]
    for t in ticks:
        producer.send("clicks", key=t["visitor_id"].encode(), value=json.dumps(t).encode())
    producer.flush()
    time.sleep(0)  # keep order: the late click is sent after the ticks were flushed
    late = {"visitor_id": "visitor-late", "item_id": "item-2", "ts": max_ts - GAP,
            "event_id": "late-1"}
    for i in range(40):  # one per tick partition is enough; send to many visitors
        late_i = {**late, "visitor_id": f"tick-{i}", "event_id": f"late-{i}"}
        send_bad(json.dumps(late_i).encode(), "late", key=late_i["visitor_id"].encode())
    producer.flush()
    producer.close()

    accepted_ids = [c["event_id"] for c in clicks] + [t["event_id"] for t in ticks]
    recs = {}
    repeats = 0
    rec_schema = validator("recommendations")
    for r in read_records(stack.address, "recommendations",
                          until=lambda n: n >= len(accepted_ids), timeout=180):
        d = json.loads(r.value)
        rec_schema.validate(d)
        if d["event_id"] in recs:
            repeats += 1
        recs[d["event_id"]] = d
        assert r.key == d["visitor_id"].encode()
    assert repeats == 0
    assert set(recs) == set(accepted_ids), worker.log_tail()
    for d in recs.values():
        assert d["source"] in ("model", "fallback")
        assert 0 < len(d["items"]) <= 20
        assert all(set(i) == {"item_id", "score"} for i in d["items"])
        scores = [i["score"] for i in d["items"]]
        assert scores == sorted(scores, reverse=True)

    # Sessions split exactly where the gap says.
    for ids in expected_sessions:
        sids = {recs[e]["session_id"] for e in ids}
        assert len(sids) == 1, ids
    all_sids = [recs[ids[0]]["session_id"] for ids in expected_sessions]
    assert len(set(all_sids)) == len(all_sids)

    dlq = {}
    dlq_schema = validator("clicks-dlq")
    for r in read_records(stack.address, "clicks-dlq", until=lambda n: n >= len(bad), timeout=60):
        headers = dict(r.headers)
        dlq_schema.validate({k: v.decode() for k, v in headers.items()})
        dlq[r.value] = headers
    assert set(dlq) == set(bad)
    for value, reason in bad.items():
        h = dlq[value]
        assert h["sessionrec.reason"].decode() == reason, (value, h)
        assert h["sessionrec.source.topic"] == b"clicks"
        assert int(h["sessionrec.source.offset"]) >= 0

    # Every constructed session is published once closed, with its clicks in order.
    by_id = {c["event_id"]: c for c in clicks}
    want = {recs[ids[0]]["session_id"]: ids for ids in expected_sessions}
    closed: dict[str, dict] = {}
    session_schema = validator("sessions")
    for r in read_records(stack.address, "sessions", timeout=60,
                          until=lambda n: len(closed) >= len(want)):
        d = json.loads(r.value)
        session_schema.validate(d)
        if d["session_id"] in want:
            assert d["session_id"] not in closed
            closed[d["session_id"]] = d
    assert set(closed) == set(want)
    for sid, ids in want.items():
        d = closed[sid]
        assert [(x["item_id"], x["ts"]) for x in d["clicks"]] == [
            (by_id[e]["item_id"], by_id[e]["ts"]) for e in ids]
        assert d["close_reason"] in ("gap", "idle")
        assert d["start"] == by_id[ids[0]]["ts"] and d["end"] == by_id[ids[-1]]["ts"]

    metrics = worker.metrics()
    counts: dict[str, float] = defaultdict(float)
    for line in metrics.splitlines():
        if line.startswith("sessionrec_clicks_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    assert counts["accepted"] == len(accepted_ids)
    assert counts["duplicate"] == duplicates
    for reason, n in Counter(bad.values()).items():
        assert counts[reason] == n, reason
