"""A restarted worker resumes live sessions from the table's changelog topic."""

from __future__ import annotations

import json
import time

import pytest

from streams.local import LocalStack
from streams.produce import make_producer
from streams.watch import read_records

pytestmark = pytest.mark.broker


def send(producer, clicks: list[dict]) -> None:  # type: ignore[no-untyped-def]
    for c in clicks:
        producer.send("clicks", key=c["visitor_id"].encode(), value=json.dumps(c).encode())
    producer.flush()


def collect(stack: LocalStack, want: set[str], timeout: float = 120) -> dict[str, dict]:
    got: dict[str, dict] = {}
    for r in read_records(stack.address, "recommendations", timeout=timeout,
                          until=lambda n: want <= set(got)):
        d = json.loads(r.value)
        got[d["event_id"]] = d
    return got


def test_sessions_survive_a_worker_restart(stack: LocalStack) -> None:
    base = time.time() - 3600
    before = [{"visitor_id": f"r{v}", "item_id": f"i{(v + n) % 7}", "ts": base + 10 * n,
               "event_id": f"b{v}-{n}"} for n in range(3) for v in range(20)]
    after = [{"visitor_id": f"r{v}", "item_id": "i9", "ts": base + 100, "event_id": f"a{v}"}
             for v in range(20)]
    producer = make_producer(stack.address)
    first = stack.start_worker("first")
    first.wait_ready(180)
    send(producer, before)
    recs = collect(stack, {c["event_id"] for c in before})
    sessions = {c["visitor_id"]: recs[c["event_id"]]["session_id"] for c in before}
    stack.stop_worker(first)  # a clean stop; the crash case is the scale-out issue's

    second = stack.start_worker("second")  # new process, empty state dir: only the changelog
    second.wait_ready(180)
    send(producer, after)
    recs = collect(stack, {c["event_id"] for c in after} | {c["event_id"] for c in before})
    for c in after:
        # Same session: the click is 70 s after the visitor's last one, within the gap.
        assert recs[c["event_id"]]["session_id"] == sessions[c["visitor_id"]]
    producer.close()
