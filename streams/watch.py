"""Read topics the way a widget (or a test) does, with kafka-python.

Partitions are assigned directly rather than through a consumer group: a reader that only
watches needs no offsets committed, and skips the group join (which can take tens of
seconds on a fresh broker).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson


def assigned_consumer(address: str, topic: str, from_beginning: bool = True,
                      options: dict[str, Any] | None = None) -> Any:
    from kafka import KafkaConsumer, TopicPartition

    # A short fetch wait: the local broker holds an empty fetch for most of it (500 ms by
    # default) even when data arrives meanwhile, and readers here watch live topics (the
    # worker's delta reader passes its SESSIONREC_DELTAS_FETCH_MAX_WAIT_MS in ``options``).
    consumer = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=500,
                             **{"fetch_max_wait_ms": 100, **(options or {})})
    deadline = time.monotonic() + 30
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < deadline:
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        consumer.close()
        raise TimeoutError(f"topic {topic!r} not found")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    else:
        consumer.seek_to_end(*tps)
    return consumer


def read_records(
    address: str, topic: str, until: Any = None, timeout: float = 60.0, idle: float | None = None,
    from_beginning: bool = True, options: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield raw records until ``until(count)`` is true, ``timeout`` passes, or nothing new
    arrived for ``idle`` seconds."""
    consumer = assigned_consumer(address, topic, from_beginning, options)
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    n = 0
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            got = False
            for records in batch.values():
                for r in records:
                    got = True
                    n += 1
                    yield r
            if got:
                last_new = time.monotonic()
            if until is not None and until(n):
                return
            if idle is not None and time.monotonic() - last_new > idle:
                return
    finally:
        consumer.close()


def format_recommendation(value: bytes, top: int = 5) -> str:
    d = orjson.loads(value)
    items = " ".join(f"{i['item_id']}({i['score']:.2f})" for i in d["items"][:top])
    return (f"{d['visitor_id']:>10}  {d['session_id']:<24} {d['source']:<8} "
            f"v{d['model_version']:<7} {items}")
