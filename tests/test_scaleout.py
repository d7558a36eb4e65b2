"""Several workers on the real broker: one model between them, and a SIGKILL loses nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter, defaultdict

import pytest

from streams import snapshot
from streams.local import LocalStack, Worker, wait_until
from streams.produce import make_producer
from streams.watch import read_records

pytestmark = pytest.mark.broker
ENV = {"SESSIONREC_SHARE_INTERVAL_S": "0.5", "SESSIONREC_SNAPSHOT_INTERVAL_S": "1"}


def clicks(prefix: str, visitors: int, per_visitor: int, items: list[str], base: float) -> list[list[dict]]:
    """Rounds of clicks: round n holds each visitor's n-th click (20 s apart: one session)."""
    return [[{"visitor_id": f"{prefix}{v}", "item_id": items[(v * 7 + n * 3) % len(items)],
              "ts": base + 20 * n, "event_id": f"{prefix}{v}-{n}"} for v in range(visitors)]
            for n in range(per_visitor)]


def send(producer, batch: list[dict]) -> None:  # type: ignore[no-untyped-def]
    for c in batch:
        producer.send("clicks", key=c["visitor_id"].encode(), value=json.dumps(c).encode())
    producer.flush()


def answers(stack: LocalStack, want: set[str], timeout: float = 180,
            workers: tuple[Worker, ...] = ()) -> list[dict]:
    """Every suggestion on the topic (repeats included) until each of ``want`` is answered.
    If some never are, the failure says where they went: a second read of the topic, the
    dead letters naming them, and each worker's clicks by outcome."""
    got: list[dict] = []
    seen: set[str] = set()

    def done(_: int) -> bool:
        return want <= seen

    for r in read_records(stack.address, "recommendations", timeout=timeout, until=done):
        d = json.loads(r.value)
        got.append(d)
        seen.add(d["event_id"])
    missing = want - seen
    if missing:
        again = {json.loads(r.value)["event_id"]
                 for r in read_records(stack.address, "recommendations", timeout=30, idle=5)}
        dead = [r.value.decode(errors="replace")[:300]
                for r in read_records(stack.address, stack.settings().dlq_topic, timeout=15, idle=3)
                if any(m.encode() in r.value for m in missing)]
        outcomes = [[line for line in w.metrics().splitlines() if line.startswith("sessionrec_clicks_total")]
                    for w in workers if w.proc.poll() is None]
        pytest.fail(f"{len(missing)} clicks never answered: {sorted(missing)[:10]}; found by a second "
                    f"read: {sorted(missing & again)[:10]}; dead letters naming them: {dead[:5]}; "
                    f"clicks by outcome: {outcomes}")
    return got


def send_and_answer(stack: LocalStack, producer, rounds: list[list[dict]]) -> None:  # type: ignore[no-untyped-def]
    for batch in rounds:
        send(producer, batch)
    answers(stack, {c["event_id"] for b in rounds for c in b})


def test_a_newcomer_gets_the_model_and_both_learn_one_model(stack: LocalStack) -> None:
    producer = make_producer(stack.address)
    first = stack.start_worker("share-a", extra_env=ENV)
    first.wait_ready(180)
    old = [f"old{i}" for i in range(20)]
    send_and_answer(stack, producer, clicks("n", 30, 4, old, time.time() - 3600))
    wait_until(lambda: first.metric("sessionrec_model_delta_items_total") >= 20, 30, "first's deltas")

    second = stack.start_worker("share-b", extra_env=ENV)
    second.wait_ready(180)
    # Ready means caught up: the newcomer knows every item before it serves a click.
    assert second.metric("sessionrec_vocabulary_items") == 20, second.log_tail()
    first.wait_ready(180)

    new = [f"new{i}" for i in range(30)]
    send_and_answer(stack, producer, clicks("m", 40, 3, new, time.time() - 1800))
    # Each worker saw only its partitions' clicks, and both know every item.
    for w in (first, second):
        # (B023: the check runs here, before the loop moves on to the next worker)
        wait_until(lambda: w.metric("sessionrec_vocabulary_items") == 50, 30, "all 50 items")  # noqa: B023
        assert w.metric('sessionrec_model_deltas_total{outcome="merged"}') > 0
    producer.close()
    for w in (first, second):  # the next test's group is its own two workers
        stack.stop_worker(w)


def test_a_worker_shares_before_the_interval_once_enough_rows_wait(stack: LocalStack) -> None:
    """An interval the test never reaches: deltas go out only because changed rows piled
    up past ``SESSIONREC_SHARE_MAX_ROWS`` (the agent's trigger, not the timer's)."""
    producer = make_producer(stack.address)
    w = stack.start_worker("early", extra_env={"SESSIONREC_SHARE_INTERVAL_S": "3600",
                                               "SESSIONREC_SHARE_MAX_ROWS": "20"})
    w.wait_ready(180)
    published = 'sessionrec_model_delta_items_total{direction="published"}'
    assert w.metric(published) == 0
    send_and_answer(stack, producer, clicks("e", 30, 4, [f"e{i}" for i in range(40)], time.time() - 3600))
    wait_until(lambda: w.metric(published) >= 20, 30, "deltas before the interval")
    producer.close()
    stack.stop_worker(w)


def test_a_sigkill_mid_stream_loses_no_click_and_no_session(stack: LocalStack) -> None:
    """Two workers; one is killed without warning mid-stream and restarted on its state
    directory. A consumer that drops repeated event ids sees every click answered once;
    every visitor keeps one session; the restarted worker's model is not reset."""
    producer = make_producer(stack.address)
    w1 = stack.start_worker("kill-a", extra_env=ENV)
    w2 = stack.start_worker("kill-b", extra_env=ENV)
    w1.wait_ready(180)
    w2.wait_ready(180)
    items = [f"k{i}" for i in range(25)]
    rounds = clicks("v", 60, 12, items, time.time() - 3600)
    send_and_answer(stack, producer, rounds[:4])
    wait_until(lambda: (w2.data_dir / snapshot.FILENAME).exists(), 30, "a snapshot")
    known = w2.metric("sessionrec_vocabulary_items")

    os.killpg(w2.proc.pid, signal.SIGKILL)  # mid-stream: the next rounds are on their way
    for batch in rounds[4:8]:
        send(producer, batch)
    w2.proc.wait(10)
    w2b = stack.start_worker("kill-b", extra_env=ENV)  # same state directory
    w2b.wait_ready(180)
    assert w2b.metric("sessionrec_vocabulary_items") >= known  # snapshot + deltas, not zero
    for batch in rounds[8:]:
        send(producer, batch)

    want = {c["event_id"] for b in rounds for c in b}
    got = answers(stack, want, workers=(w1, w2b))
    mine = [d for d in got if d["event_id"] in want]
    repeats = len(mine) - len(want)
    twice = Counter(d["event_id"] for d in mine)
    by_round = Counter(int(e.rsplit("-", 1)[1]) for e, n in twice.items() if n > 1)
    counted = sum(w.metric('sessionrec_clicks_total{outcome="redelivered"}') for w in (w1, w2b))
    print(f"{len(want)} clicks, {repeats} answered twice (rounds {dict(by_round)}), {counted} counted")
    assert 0 <= repeats < len(want) // 2
    # A repeat is a click whose offset was not committed yet. The new owner counts it as
    # redelivered when the click's session update reached the changelog before the kill
    # (else it learns it again, as accepted): never more than the repeats.
    assert counted <= repeats
    sessions: dict[str, set[str]] = defaultdict(set)
    for d in mine:
        sessions[d["visitor_id"]].add(d["session_id"])
    assert all(len(s) == 1 for s in sessions.values()), {v: s for v, s in sessions.items() if len(s) > 1}
    assert len(sessions) == 60
    assert max(Counter(d["event_id"] for d in mine).values()) <= 2
    producer.close()
