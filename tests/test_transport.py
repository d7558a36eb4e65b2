"""The worker's Kafka consumer gets the configured fetch wait, not Faust's fixed 1,500 ms;
the model-deltas reader waits apart from it and knows where the topic ended."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import ensure_topics
from streams.local import LocalStack
from streams.share import DeltaReader
from streams.transport import ConsumerThread, consumer_urls


def test_the_consumer_faust_builds_waits_as_configured(tmp_path: Path) -> None:
    urls = consumer_urls("kafka://127.0.0.1:1;kafka://127.0.0.2:2", 77)
    assert urls == "sessionrec-kafka://127.0.0.1:1;sessionrec-kafka://127.0.0.2:2"

    async def build() -> int:
        app = faust.App("transport-test", broker="kafka://127.0.0.1:1", broker_consumer=urls,
                        store="memory://", datadir=str(tmp_path))
        # What Faust's consumer delegates to: a private attribute of faust's
        # ThreadDelegateConsumer, which its ConsumerT annotation does not declare.
        thread = app.consumer._thread  # type: ignore[attr-defined]
        assert isinstance(thread, ConsumerThread)
        consumer = thread._create_worker_consumer(app.consumer.transport)  # builds, no connect
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(build()) == 77


@pytest.mark.broker
def test_the_delta_reader_waits_apart_from_the_clicks(stack: LocalStack) -> None:
    """The model-deltas thread holds its fetches for its own wait: at the clicks' short wait
    it took the interpreter from the event loop (p50 57-78 ms instead of 38 ms)."""
    settings = stack.settings(fetch_max_wait_ms=7, deltas_fetch_max_wait_ms=333)
    ensure_topics(settings)
    reader = DeltaReader(settings, {})
    consumer = reader._consumer()
    try:
        assert consumer.config["fetch_max_wait_ms"] == 333
    finally:
        consumer.close()


def _ends(reader: DeltaReader, timeout: float = 60.0) -> dict[int, int]:
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while reader.ends is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.ends is not None, "no fetch answered"
        return reader.ends
    finally:
        reader.stop()


async def _one_batch(address: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=address)
    await producer.start()
    try:
        await producer.client._wait_on_metadata(topic)
        batch = producer.create_batch()
        for i in range(n):
            batch.append(timestamp=None, key=b"w", value=b"delta %d" % i, headers=[])
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


@pytest.mark.broker
def test_the_delta_readers_ends_count_a_whole_last_batch(stack: LocalStack) -> None:
    """A newcomer is caught up once it merged every delta on the topic when it started. The
    local broker's ListOffsets counts only the first record of the last batch; five deltas
    in one batch read as an end of 1 there."""
    settings = stack.settings(model_deltas_topic="deltas-ends")
    ensure_topics(settings)
    empty = _ends(DeltaReader(settings, {}))
    assert set(empty.values()) == {0}  # an empty topic: caught up at once, not never
    asyncio.run(_one_batch(stack.address, "deltas-ends", 5))
    assert _ends(DeltaReader(settings, {})) == {**empty, 0: 5}
