"""A broker outage: the worker stays up, reconnects, and answers every click produced before,
during and after it. The local broker keeps its data only in memory, so the outage is
simulated without killing it: SIGSTOP for 30 s, then SIGCONT."""

from __future__ import annotations

import json
import time

import pytest

from streams.local import LocalStack, http_get
from streams.produce import make_producer
from streams.watch import read_records

pytestmark = pytest.mark.broker

OUTAGE_S = 30.0


def _clicks(tag: str, base: float, n: int = 60) -> list[dict[str, object]]:
    return [{"visitor_id": f"v{i % 15}", "item_id": f"i{i % 9}", "ts": base + i, "event_id": f"{tag}{i}"}
            for i in range(n)]


def test_worker_survives_a_30s_broker_outage(stack: LocalStack) -> None:
    worker = stack.start_worker("outage")
    worker.wait_ready(180)
    producer = make_producer(stack.address)
    now = time.time()
    before, during, after = _clicks("b", now - 600), _clicks("d", now - 300), _clicks("a", now - 100)

    def send(clicks: list[dict[str, object]]) -> None:
        for c in clicks:
            producer.send("clicks", key=str(c["visitor_id"]).encode(), value=json.dumps(c).encode())

    send(before)
    producer.flush()
    with stack.frozen():
        send(during)  # buffered by the producer while the broker is frozen
        time.sleep(OUTAGE_S)  # the outage itself, not a wait for readiness
        assert worker.proc.poll() is None, worker.log_tail()
        assert http_get(worker.url + "/livez")[0] == 200  # alive, though it cannot reach Kafka
    producer.flush()
    send(after)
    producer.flush()
    producer.close()
    want = {str(c["event_id"]) for c in before + during + after}
    got: set[str] = set()
    for r in read_records(stack.address, "recommendations", timeout=240, until=lambda n: want <= got):
        got.add(json.loads(r.value)["event_id"])
    assert want <= got, f"{len(want - got)} clicks unanswered:\n{worker.log_tail()}"
    assert worker.proc.poll() is None
