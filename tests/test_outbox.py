"""The outbox on the real broker: what it sends arrives, each record on the partition the
producer's own partitioner gives its key (or the one asked), in the order it was put, with
its headers, across batches that overflow aiokafka's batch size; and what the broker never
takes fails the producer's flush that Faust's commit waits on; and a table's changelog
reports its true end offset, which Faust's recovery reads up to."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from streams.broker import ensure_topics
from streams.local import LocalStack
from streams.outbox import CheckedProducer, DeliveryFailed, Outbox, Record
from streams.watch import read_records

pytestmark = pytest.mark.broker


async def send_all(address: str, records: list[Record], flushes: int) -> dict[tuple[str, bytes | None], int]:
    """Put ``records`` in ``flushes`` rounds; returns the partition the producer's
    partitioner gives each keyed record (what ``send`` without a partition would use)."""
    producer = AIOKafkaProducer(bootstrap_servers=address, max_batch_size=4096, linger_ms=5)
    await producer.start()
    try:
        def partition_of(topic: str, key: bytes | None) -> int:
            part: int = producer._partition(topic, None, None, None, key, None)
            return part

        outbox = Outbox(lambda: producer, partition_of)
        expected: dict[tuple[str, bytes | None], int] = {}
        for topic in {r.topic for r in records}:
            await producer.client._wait_on_metadata(topic)
        for r in records:
            if r.key is not None and r.partition is None:
                expected[(r.topic, r.key)] = partition_of(r.topic, r.key)
        step = -(-len(records) // flushes)
        for lo in range(0, len(records), step):
            for r in records[lo : lo + step]:
                outbox.put(r)
            await outbox.flush()
        assert outbox.pending == []
        await producer.flush()
        return expected
    finally:
        await producer.stop()


def test_records_arrive_in_order_on_their_partitions(stack: LocalStack) -> None:
    # The product's topic helper, with two of its names pointed at this test's topics.
    ensure_topics(stack.settings(clicks_topic="outbox-a", recommendations_topic="outbox-b", partitions=4))
    records: list[Record] = []
    for i in range(600):
        topic = "outbox-a" if i % 3 else "outbox-b"
        value = f"{i:05d}".encode() + b"x" * 200  # 600 x 200 B: several 4 KiB batches each
        if i % 50 == 0:
            records.append(Record(topic, None, value, [("reason", b"no-key")]))
        elif i % 7 == 0:
            records.append(Record(topic, f"v{i % 11}".encode(), value, partition=i % 4))
        else:
            records.append(Record(topic, f"v{i % 11}".encode(), value))
    expected = asyncio.run(send_all(stack.address, records, flushes=5))

    got: dict[str, list[Any]] = {}
    for topic in ("outbox-a", "outbox-b"):
        n = sum(1 for r in records if r.topic == topic)
        got[topic] = list(read_records(stack.address, topic, until=lambda c, n=n: c >= n, timeout=60))
        assert len(got[topic]) == n
    for topic, rows in got.items():
        by_part: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            i = int(r.value[:5])
            sent = records[i]
            assert (r.key, r.value) == (sent.key, sent.value)
            assert [(k, bytes(v)) for k, v in r.headers] == list(sent.headers or [])
            if sent.partition is not None:
                assert r.partition == sent.partition
            elif sent.key is not None:
                assert r.partition == expected[(topic, sent.key)]
            by_part[r.partition].append(i)
        for part, order in by_part.items():  # read in offset order per partition
            assert order == sorted(order), f"{topic}/{part} out of put order"


async def delivery_seconds(address: str, topic: str, linger_ms: int) -> list[float]:
    """Seconds from each of three flushes (one record each, same partition) until the
    broker has it, through a producer that lingers ``linger_ms``."""
    producer = AIOKafkaProducer(bootstrap_servers=address, linger_ms=linger_ms)
    await producer.start()
    try:
        await producer.client._wait_on_metadata(topic)
        outbox = Outbox(lambda: producer, lambda t, k: 0)
        took = []
        for i in range(3):
            t0 = asyncio.get_running_loop().time()
            outbox.put(Record(topic, b"k", f"m{i}".encode()))
            await asyncio.wait_for(asyncio.gather(*await outbox.flush()), timeout=30)
            took.append(asyncio.get_running_loop().time() - t0)
        return took
    finally:
        await producer.stop()


def test_a_flush_is_sent_without_the_producers_linger(stack: LocalStack) -> None:
    # An open batch would sit in aiokafka's accumulator for the whole linger (2 s here) and
    # the next flush to that partition would wait behind it: 6 s for the three.
    ensure_topics(stack.settings(clicks_topic="outbox-linger", partitions=1))
    took = asyncio.run(delivery_seconds(stack.address, "outbox-linger", linger_ms=2000))
    assert max(took) < 1.0, took
    assert [r.value for r in read_records(stack.address, "outbox-linger", until=lambda c: c >= 3,
                                          timeout=60)] == [b"m0", b"m1", b"m2"]


async def lose_a_batch(stack: LocalStack) -> list[DeliveryFailed]:
    """One record delivered, then two sent while the broker is frozen for longer than the
    producer's request timeout (1 s). Returns the failures the outbox reported."""
    app = faust.App("outbox-check", broker=f"kafka://{stack.address}", producer_request_timeout=1.0)
    failures: list[DeliveryFailed] = []
    outbox = Outbox(lambda: producer._ensure_producer(), lambda topic, key: 0,
                    on_failure=failures.append)
    producer = CheckedProducer(outbox, app.transport, loop=asyncio.get_running_loop(), beacon=app.beacon)
    await producer.start()
    try:
        outbox.put(Record("outbox-lost", b"k", b"kept", partition=0))
        await outbox.flush()
        await producer.flush()  # delivered: the commit may go on
        with stack.frozen():
            outbox.put(Record("outbox-lost", b"k", b"lost-1", partition=0))
            outbox.put(Record("outbox-lost", b"k", b"lost-2", partition=0))
            await outbox.flush()
            # aiokafka's own flush returns once the batch has failed; this one must raise.
            with pytest.raises(DeliveryFailed, match=r"2 records to outbox-lost\[0\]"):
                await asyncio.wait_for(producer.flush(), 30)
        outbox.put(Record("outbox-lost", b"k", b"after", partition=0))
        with pytest.raises(DeliveryFailed):  # nothing more goes out after a loss
            await outbox.flush()
        return failures
    finally:
        await producer.stop()


def test_a_lost_batch_fails_the_flush_before_a_commit(stack: LocalStack) -> None:
    ensure_topics(stack.settings(clicks_topic="outbox-lost", partitions=1))
    failures = asyncio.run(lose_a_batch(stack))
    assert [(f.topic, f.partition, f.records) for f in failures] == [("outbox-lost", 0, 2)]
    # A timed-out request may still land once the broker thaws (so: "not confirmed"), but
    # nothing put after the failure does.
    values = [r.value for r in read_records(stack.address, "outbox-lost", timeout=10, idle=3)]
    assert values[0] == b"kept" and b"after" not in values, values


async def flush_rounds(address: str, topic: str, rounds: list[int]) -> None:
    """``rounds[i]`` keyed records over the topic's partitions, one flush each."""
    producer = AIOKafkaProducer(bootstrap_servers=address)
    await producer.start()
    try:
        await producer.client._wait_on_metadata(topic)

        def partition_of(topic: str, key: bytes | None) -> int:
            part: int = producer._partition(topic, None, None, None, key, None)
            return part

        outbox = Outbox(lambda: producer, partition_of, exact_ends=frozenset({topic}))
        for n in rounds:
            for i in range(n):
                outbox.put(Record(topic, f"v{i % 11}".encode(), b"state"))
            await outbox.flush()
        await producer.flush()
    finally:
        await producer.stop()


def test_a_changelogs_end_offset_counts_every_record(stack: LocalStack) -> None:
    # Without ``exact_ends`` the local broker reports the end of a partition whose last
    # batch holds five records as four short of it, and a recovery stops there.
    ensure_topics(stack.settings(clicks_topic="outbox-ends", partitions=3))
    asyncio.run(flush_rounds(stack.address, "outbox-ends", [40, 1, 25, 7]))
    per_partition: dict[int, int] = defaultdict(int)
    for r in read_records(stack.address, "outbox-ends", until=lambda n: n >= 73, timeout=60):
        per_partition[r.partition] += 1
    assert sum(per_partition.values()) == 73
    consumer = KafkaConsumer(bootstrap_servers=stack.address)
    try:
        ends = consumer.end_offsets([TopicPartition("outbox-ends", p) for p in range(3)])
    finally:
        consumer.close()
    assert {tp.partition: int(end) for tp, end in ends.items()} == {p: per_partition[p] for p in range(3)}


async def send_to_a_missing_partition(address: str, topic: str) -> tuple[list[DeliveryFailed], Any]:
    """A record for a partition the topic does not have: aiokafka refuses it at once."""
    producer = AIOKafkaProducer(bootstrap_servers=address)
    await producer.start()
    failures: list[DeliveryFailed] = []
    try:
        await producer.client._wait_on_metadata(topic)
        outbox = Outbox(lambda: producer, lambda t, k: 0, on_failure=failures.append)
        outbox.put(Record(topic, b"k", b"v", partition=7))
        with pytest.raises(DeliveryFailed, match=r"1 records to outbox-refused\[7\]") as raised:
            await outbox.flush()
        with pytest.raises(DeliveryFailed):
            outbox.check()  # the commit that follows is refused as well
        return failures, raised.value
    finally:
        await producer.stop()


def test_a_batch_refused_when_handed_over_fails_the_flush(stack: LocalStack) -> None:
    ensure_topics(stack.settings(clicks_topic="outbox-refused", partitions=1))
    failures, raised = asyncio.run(send_to_a_missing_partition(stack.address, "outbox-refused"))
    assert [(f.topic, f.partition, f.records) for f in failures] == [("outbox-refused", 7, 1)]
    assert isinstance(raised.cause, AssertionError)  # aiokafka: "Unrecognized partition"
