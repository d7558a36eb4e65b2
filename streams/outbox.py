"""What the worker produces, sent as one record batch per topic partition per flush.

Faust's ``send_soon`` costs, per message, a buffer entry, a future, a task hop into the
producer, aiokafka's own per-message ``send`` and a delivery callback: about a fifth of the
worker's event loop while it drained clicks (py-spy), for two messages per click (the
suggestion and the session's changelog write). Here a batch of clicks' messages is grouped
by topic partition and each group goes to aiokafka as one ``BatchBuilder``
(``create_batch`` / ``send_batch``), the records appended by its compiled builder.

At-least-once: records are handed to aiokafka's accumulator before the agent's iteration
ends (so before Faust acks its clicks), and Faust's commit first awaits
``producer.flush()``, which waits for every batch in that accumulator. That wait ends as
well when a batch *fails* (aiokafka gives up after the producer's request timeout, or the
broker refuses it), and Faust then commits the clicks whose output was lost; its own
``send_soon`` only logs such a failure. So the outbox watches every batch it hands over:
the first failure is kept (``failure``) and reported (``on_failure``), ``check`` raises it,
and the worker's producer calls ``check`` after its flush, so no commit passes a lost
record; the worker then stops, and its clicks are read again from the last commit.

Order: records leave in the order they were ``put`` (one list, one flush at a time), so a
session's changelog writes and its delete by the sweep reach the changelog in the order the
table saw them, as they did through Faust's single buffer.

End offsets: the local broker (tansu 0.6.0, memory storage) answers a ListOffsets for the
latest offset with the *first* offset of the partition's last record batch + 1, not its
last + 1 (five records in one batch: end offset 1). Faust recovers a table by reading its
changelog up to that answer, so a restarted worker lost every record of the last batch but
its first: a visitor whose state was only there started a new session (tests/test_restart.py
failed now and then on it). For the topics in ``exact_ends`` (the changelog) each flush's
last record to a partition therefore goes in a batch of its own, which makes that answer
right; on Apache Kafka this costs one more small batch per changelog partition per flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int | None = None
    """None: the producer's partitioner picks it from the key (as ``send`` would)."""


class DeliveryFailed(RuntimeError):
    """Records the producer could not confirm delivered (refused, or timed out: a request
    sent to a broker that stopped answering may still land), so the inputs behind them must
    not be committed: read again, they are answered again (at least once)."""

    def __init__(self, topic: str, partition: int, records: int, cause: BaseException) -> None:
        super().__init__(f"{records} records to {topic}[{partition}] were not confirmed delivered: {cause!r}")
        self.topic = topic
        self.partition = partition
        self.records = records
        self.cause = cause


class Outbox:
    """``put`` records as they are made (no I/O), ``flush`` them to the producer in batches.

    ``producer``: the aiokafka producer, looked up at each flush (Faust creates it on start);
    ``partition_of(topic, key)``: the partition the producer's partitioner gives a key;
    ``on_failure``: called once per batch that fails, from the event loop (the first
    failure is ``failure`` by then);
    ``exact_ends``: topics whose end offsets are read (see the module's note)."""

    def __init__(self, producer: Callable[[], Any], partition_of: Callable[[str, bytes | None], int],
                 on_failure: Callable[[DeliveryFailed], None] | None = None,
                 exact_ends: frozenset[str] = frozenset()) -> None:
        self.producer = producer
        self.partition_of = partition_of
        self.on_failure = on_failure
        self.exact_ends = exact_ends
        self.pending: list[Record] = []
        self.failure: DeliveryFailed | None = None
        """The first batch that failed; once set, nothing more is sent (what follows it
        would reach the topics without it, e.g. a session's delete without its last write)."""
        self._lock = asyncio.Lock()

    def put(self, record: Record) -> None:
        self.pending.append(record)

    def check(self) -> None:
        """Raise the first delivery failure, if any: call it before committing inputs."""
        if self.failure is not None:
            raise self.failure

    def _failed(self, topic: str, partition: int, records: int, cause: BaseException) -> DeliveryFailed:
        failure = DeliveryFailed(topic, partition, records, cause)
        if self.failure is None:
            self.failure = failure
        if self.on_failure is not None:
            self.on_failure(failure)
        return failure

    def _settled(self, topic: str, partition: int, records: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._failed(topic, partition, records, asyncio.CancelledError())
        elif (cause := future.exception()) is not None:
            self._failed(topic, partition, records, cause)

    async def _send(self, producer: Any, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        batch.close()
        records = batch.record_count()
        try:
            future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
        except Exception as cause:  # e.g. an unknown partition, or the producer stopped
            raise self._failed(topic, partition, records, cause) from cause
        future.add_done_callback(partial(self._settled, topic, partition, records))
        return future

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Hand every pending record to the producer, not waiting for delivery; returns the
        producer's futures for it (one per record batch, done once the broker has it).

        Each builder is closed before it is handed over: aiokafka holds an open one for the
        producer's ``linger_ms`` (to take more records from ``send``), which only delayed
        every suggestion here, and made the next flush to the same partition wait for it."""
        sent: list[asyncio.Future[Any]] = []
        async with self._lock:
            self.check()
            records, self.pending = self.pending, []
            if not records:
                return sent
            producer = self.producer()
            parts = [self.partition_of(r.topic, r.key) if r.partition is None else r.partition
                     for r in records]
            alone = {(r.topic, p): i for i, (r, p) in enumerate(zip(records, parts, strict=True))
                     if r.topic in self.exact_ends} if self.exact_ends else {}  # their last records
            batches: dict[tuple[str, int], Any] = {}
            for i, (r, p) in enumerate(zip(records, parts, strict=True)):
                batch = batches.get((r.topic, p))
                if batch is not None and alone.get((r.topic, p)) == i:
                    sent.append(await self._send(producer, batch, r.topic, p))
                    batch = None
                if batch is None:
                    batch = batches[(r.topic, p)] = producer.create_batch()
                if batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers or []) is None:
                    # Full: send it, start another (an empty builder always takes one record).
                    sent.append(await self._send(producer, batch, r.topic, p))
                    batch = batches[(r.topic, p)] = producer.create_batch()
                    batch.append(timestamp=None, key=r.key, value=r.value, headers=r.headers or [])
            for (topic, p), batch in batches.items():
                sent.append(await self._send(producer, batch, topic, p))
        return sent


class CheckedProducer(faust_aiokafka.Producer):
    """Faust's producer, whose flush raises the outbox's delivery failure: Faust commits the
    input offsets right after this flush returns (``Consumer._commit_offsets``), and must
    not commit clicks whose output was lost. The commit fails instead, and the worker stops."""

    def __init__(self, outbox: Outbox, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox = outbox

    async def flush(self) -> None:
        await super().flush()
        self.outbox.check()
