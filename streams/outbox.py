"""What the worker produces, sent as one record batch per topic partition per flush.

Faust's ``send_soon`` costs, per message, a buffer entry, a future, a task hop into the
producer, aiokafka's own per-message ``send`` and a delivery callback: about a fifth of the
worker's event loop while it drained clicks (py-spy), for two messages per click (the
suggestion and the session's changelog write). Here a batch of clicks' messages is grouped
by topic partition and each group goes to aiokafka as one ``BatchBuilder``
(``create_batch`` / ``send_batch``), the records appended by its compiled builder.

At-least-once holds as with ``send_soon``: records are handed to aiokafka's accumulator
before the agent's iteration ends (so before Faust acks its clicks), and Faust's commit
first awaits ``producer.flush()``, which waits for every batch in that accumulator.

Order: records leave in the order they were ``put`` (one list, one flush at a time), so a
session's changelog writes and its delete by the sweep reach the changelog in the order the
table saw them, as they did through Faust's single buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int | None = None
    """None: the producer's partitioner picks it from the key (as ``send`` would)."""


class Outbox:
    """``put`` records as they are made (no I/O), ``flush`` them to the producer in batches.

    ``producer``: the aiokafka producer, looked up at each flush (Faust creates it on start);
    ``partition_of(topic, key)``: the partition the producer's partitioner gives a key."""

    def __init__(self, producer: Callable[[], Any], partition_of: Callable[[str, bytes | None], int]) -> None:
        self.producer = producer
        self.partition_of = partition_of
        self.pending: list[Record] = []
        self._lock = asyncio.Lock()

    def put(self, record: Record) -> None:
        self.pending.append(record)

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Hand every pending record to the producer, not waiting for delivery; returns the
        producer's futures for it (one per record batch, done once the broker has it).

        Each builder is closed before it is handed over: aiokafka holds an open one for the
        producer's ``linger_ms`` (to take more records from ``send``), which only delayed
        every suggestion here, and made the next flush to the same partition wait for it."""
        sent: list[asyncio.Future[Any]] = []
        async with self._lock:
            records, self.pending = self.pending, []
            if not records:
                return sent
            producer = self.producer()
            batches: dict[tuple[str, int], Any] = {}
            for r in records:
                p = self.partition_of(r.topic, r.key) if r.partition is None else r.partition
                batch = batches.get((r.topic, p))
                if batch is None:
                    batch = batches[(r.topic, p)] = producer.create_batch()
                if batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers or []) is None:
                    # Full: send it, start another (an empty builder always takes one record).
                    batch.close()
                    sent.append(await producer.send_batch(batch, r.topic, partition=p))
                    batch = batches[(r.topic, p)] = producer.create_batch()
                    batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers or [])
            for (topic, p), batch in batches.items():
                batch.close()
                sent.append(await producer.send_batch(batch, topic, partition=p))
        return sent
