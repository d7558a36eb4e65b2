"""Faust's Kafka transport (aiokafka), with the click consumer's fetch wait as a setting.

Faust builds its group consumer with ``fetch_max_wait_ms=1500``, fixed. A broker may hold a
fetch that long when a partition has nothing new. Apache Kafka answers as soon as data
arrives, so the wait costs nothing there; the local broker (tansu 0.6) answers late, and a
click then waits for the fetch to come back. Measured on it: suggestion latency p50 590 ms
at 1,500 ms against 162 ms at 50 ms, 60 clicks/s, one worker. The setting is
``SESSIONREC_FETCH_MAX_WAIT_MS``; a shorter wait costs one more empty fetch per wait on an
idle partition, nothing else.

Faust picks its consumer transport by the broker URL's scheme, from a registry it keeps
for extensions (``faust.transport.drivers.TRANSPORTS``): ``consumer_urls`` registers this
module under ``sessionrec-kafka`` and returns the broker list with that scheme. The
producer keeps Faust's own transport.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver

SCHEME = "sessionrec-kafka"


class ConsumerThread(driver.AIOKafkaConsumerThread):
    fetch_max_wait_ms = 1500
    """Faust's own value until ``consumer_urls`` sets the configured one."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts (AIOKafkaConsumer.start builds the
        # Fetcher from it); Faust offers no setting for it.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = Consumer


def consumer_urls(broker: str, fetch_max_wait_ms: int) -> str:
    """``broker`` (``kafka://host:port``, several joined by ``;``) naming this transport."""
    ConsumerThread.fetch_max_wait_ms = int(fetch_max_wait_ms)
    TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
    return ";".join(f"{SCHEME}://{url.split('://', 1)[-1]}" for url in broker.split(";"))
