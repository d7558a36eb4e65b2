"""A restarted worker resumes live sessions from the table's changelog topic."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
import pytest

from streams import snapshot
from streams.local import LocalStack
from streams.produce import make_producer
from streams.watch import read_records

pytestmark = pytest.mark.broker


class ClickJson(TypedDict):
    """A click as the tests produce it to the clicks topic."""

    visitor_id: str
    item_id: str
    ts: float
    event_id: str


def send(producer: Any, clicks: list[ClickJson]) -> None:  # make_producer's KafkaProducer
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
    before: list[ClickJson] = [
        {"visitor_id": f"r{v}", "item_id": f"i{(v + n) % 7}", "ts": base + 10 * n,
         "event_id": f"b{v}-{n}"} for n in range(3) for v in range(20)]
    after: list[ClickJson] = [
        {"visitor_id": f"r{v}", "item_id": "i9", "ts": base + 100, "event_id": f"a{v}"}
        for v in range(20)]
    producer = make_producer(stack.address)
    first = stack.start_worker("first")
    first.wait_ready(180)
    send(producer, before)
    recs = collect(stack, {c["event_id"] for c in before})
    sessions = {c["visitor_id"]: recs[c["event_id"]]["session_id"] for c in before}
    stack.stop_worker(first)  # a clean stop; the crash case is the scale-out issue's
    # A clean stop saves the model (the interval, 60 s, has not come round in this test).
    with np.load(first.data_dir / snapshot.FILENAME) as f:
        assert {c["item_id"] for c in before} <= _ids(f)

    second = stack.start_worker("second")  # new process, empty state dir: only the changelog
    second.wait_ready(180)
    send(producer, after)
    recs = collect(stack, {c["event_id"] for c in after} | {c["event_id"] for c in before})
    for c in after:
        # Same session: the click is 70 s after the visitor's last one, within the gap.
        assert recs[c["event_id"]]["session_id"] == sessions[c["visitor_id"]]
    producer.close()


def _ids(f: Mapping[str, npt.NDArray[Any]]) -> set[str]:  # an np.load'ed NpzFile
    raw, offsets = f["ids"].tobytes(), f["id_offsets"]
    return {raw[offsets[i] : offsets[i + 1]].decode() for i in range(len(offsets) - 1)}


def test_the_model_survives_a_sigkill(stack: LocalStack) -> None:
    """Killed without warning, a worker restarted on its state directory goes on from the
    model's snapshot: it knows the items before it has seen a click again."""
    env = {"SESSIONREC_SNAPSHOT_INTERVAL_S": "1"}
    base = time.time() - 3600
    clicks: list[ClickJson] = [
        {"visitor_id": f"k{v}", "item_id": f"item{(v + n) % 12}", "ts": base + 10 * n,
         "event_id": f"k{v}-{n}"} for n in range(4) for v in range(15)]
    first = stack.start_worker("snap", extra_env=env)
    first.wait_ready(180)
    producer = make_producer(stack.address)
    send(producer, clicks)
    collect(stack, {c["event_id"] for c in clicks})
    path = first.data_dir / snapshot.FILENAME
    items = {c["item_id"] for c in clicks}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for a snapshot holding every item
        if path.exists():
            with np.load(path) as f:
                ids = _ids(f)
                if items <= ids:
                    break
        time.sleep(0.2)
    else:
        raise AssertionError("no snapshot with the 12 items")
    # (The earlier test's items are in it too: the model is shared through the deltas topic.)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)

    second = stack.start_worker("snap", extra_env=env)  # same state directory
    second.wait_ready(180)
    assert second.metric("sessionrec_vocabulary_items") >= len(ids), second.log_tail()
    producer.close()
