"""The ceiling for ``bench e2e``: a bare Faust agent that consumes a click and produces one
message, with the same app settings as the worker and no work in between. It reads and
writes the worker's topics (``SESSIONREC_CLICKS_TOPIC``, ``SESSIONREC_RECOMMENDATIONS_TOPIC``),
so the bench can put it in the worker's place."""

from __future__ import annotations

from typing import Any

import faust

from streams.settings import Settings
from streams.transport import consumer_urls

settings = Settings.from_env()
app = faust.App(f"{settings.app_id}-passthrough", broker=settings.broker, store="memory://",
                broker_consumer=consumer_urls(settings.broker, settings.fetch_max_wait_ms),
                datadir=settings.data_dir, topic_partitions=settings.partitions,
                web_port=settings.web_port, consumer_auto_offset_reset="earliest",
                Worker="streams.faust_worker:Worker")  # logs as the worker does
raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                       "value_serializer": "raw"}
clicks_topic = app.topic(settings.clicks_topic, partitions=settings.partitions, **raw)
echoes_topic = app.topic(settings.recommendations_topic, partitions=settings.partitions, **raw)


@app.agent(clicks_topic)
async def echo(stream: Any) -> None:
    """One message out per click in."""
    async for event in stream.events():
        await echoes_topic.send(key=event.key, value=event.value)


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    return web.json({"ready": bool(app.consumer.assignment())},
                    status=200 if app.consumer.assignment() else 503)
