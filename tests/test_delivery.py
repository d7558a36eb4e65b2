"""Output the broker never took: the worker stops before committing what lost it, and a
restarted worker publishes it. Faust's commit waits for the producer's batches to finish,
failed or not; without the outbox's check the clicks would be committed with their
suggestions lost, and the table's deletes with the sessions closed.

The loss is made real: the broker is frozen (SIGSTOP, as in ``test_outage``) for longer than
the producer's request timeout, while the worker still has output to send: clicks it had
fetched before the freeze, or sessions its sweep closes during it."""

from __future__ import annotations

import json
import time

import pytest

from streams.local import LocalStack, wait_until
from streams.produce import make_producer
from streams.watch import read_records

pytestmark = pytest.mark.broker

VISITORS = 12
GAP_S = 4.0
TIMEOUT_S = 3.0


def send(stack: LocalStack, clicks: list[dict[str, object]]) -> None:
    producer = make_producer(stack.address)
    for c in clicks:
        producer.send("clicks", key=str(c["visitor_id"]).encode(), value=json.dumps(c).encode())
    producer.flush()
    producer.close()


def test_clicks_whose_suggestions_were_lost_are_not_committed(stack: LocalStack) -> None:
    # The worker fetches ahead of what it has answered; frozen then, it answers the clicks it
    # holds into a producer that cannot deliver. The broker is thawed as soon as the first
    # batch fails, so a commit made after that failure would reach it.
    env = {"SESSIONREC_PRODUCER_REQUEST_TIMEOUT_S": str(TIMEOUT_S)}
    first = stack.start_worker("committer", extra_env=env)
    first.wait_ready(180)
    now = time.time()
    clicks = [{"visitor_id": f"c{i % 500}", "item_id": f"i{i % 300}", "ts": now - 600 + i * 0.01,
               "event_id": f"c{i}"} for i in range(30_000)]
    send(stack, clicks)
    answered: set[str] = set()
    for r in read_records(stack.address, "recommendations", timeout=120,
                          until=lambda n: n >= 1_000):
        answered.add(json.loads(r.value)["event_id"])
    with stack.frozen():
        wait_until(lambda: "were not confirmed delivered" in first.log_tail(400), TIMEOUT_S + 60,
                   "a lost output while the broker was frozen", first.log_tail())
    wait_until(lambda: first.proc.poll() is not None, 120,
               "the worker to stop after losing output", first.log_tail())
    assert first.proc.returncode != 0, first.log_tail()

    second = stack.start_worker("recommitter", extra_env=env)
    want = {str(c["event_id"]) for c in clicks}
    for r in read_records(stack.address, "recommendations", timeout=240,
                          until=lambda n: want <= answered):
        answered.add(json.loads(r.value)["event_id"])
    assert want <= answered, f"{len(want - answered)} clicks unanswered:\n{second.log_tail()}"
    assert second.proc.poll() is None, second.log_tail()
    stack.stop_worker(second)  # the module's next test has the group to itself


def test_lost_output_stops_the_worker_and_a_restart_publishes_it(stack: LocalStack) -> None:
    env = {"SESSIONREC_SESSION_GAP_S": str(GAP_S),
           "SESSIONREC_PRODUCER_REQUEST_TIMEOUT_S": str(TIMEOUT_S)}
    first = stack.start_worker("lossy", extra_env=env)
    first.wait_ready(180)
    now = time.time()
    clicks = [{"visitor_id": f"v{i % VISITORS}", "item_id": f"i{i % 7}", "ts": now - 60 + i,
               "event_id": f"e{i}"} for i in range(3 * VISITORS)]
    send(stack, clicks)
    want = {str(c["event_id"]) for c in clicks}
    answered: set[str] = set()
    for r in read_records(stack.address, "recommendations", timeout=120,
                          until=lambda n: want <= answered):
        answered.add(json.loads(r.value)["event_id"])
    assert want <= answered, first.log_tail()

    # Frozen before the sweep closes the sessions (GAP_S after their last click arrived):
    # their records and the table's deletes wait in the producer until its timeout.
    with stack.frozen():
        wait_until(lambda: first.proc.poll() is not None, GAP_S + TIMEOUT_S + 60,
                   "the worker to stop after losing output", first.log_tail())
    assert first.proc.returncode != 0, first.log_tail()
    assert "sessions[" in first.log_tail(400) and "were not confirmed delivered" in first.log_tail(400)

    # The deletes never reached the changelog: the next worker restores the sessions and
    # its sweep closes them, so every visitor's session is published once the broker is back.
    second = stack.start_worker("restarted", extra_env=env)
    closed: set[str] = set()
    for r in read_records(stack.address, "sessions", timeout=240,
                          until=lambda n: len(closed) == VISITORS):
        if r.key.startswith(b"v"):  # (not the sessions of the module's other test)
            closed.add(r.key.decode())
    assert closed == {f"v{i}" for i in range(VISITORS)}, second.log_tail()
    assert second.proc.poll() is None, second.log_tail()
    stack.stop_worker(second)
