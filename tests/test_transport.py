"""The worker's Kafka consumer gets the configured fetch wait, not Faust's fixed 1,500 ms."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import pytest

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
