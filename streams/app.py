"""The Faust app: topics, the sessions table, agents and timers, declared once.

Run with ``sessionrec worker`` or ``faust -A streams.app worker``. All logic lives in
``streams.handler`` (per message) and ``models`` (sessions, learning, index); this module
only wires Kafka to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator, MutableMapping
from typing import Any, cast

import faust
from faust.types import ProducerT
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.engine import Engine
from models.recommender import warm_up
from streams import metrics as m
from streams import snapshot
from streams.credentials import faust_credentials
from streams.handler import ClickHandler, Incoming, Message
from streams.outbox import CheckedProducer, DeliveryFailed, Outbox, Record
from streams.settings import Settings
from streams.share import ModelSharing
from streams.transport import consumer_urls

log = logging.getLogger("sessionrec")
settings = Settings.from_env()
settings.limit_threads()


class App(faust.App):
    def _new_producer(self) -> ProducerT:
        """Faust's producer, checking the outbox after each flush (the one before a commit)."""
        return CheckedProducer(outbox, self.transport, loop=self.loop, beacon=self.beacon)


app = App(
    settings.app_id,
    broker=settings.broker,
    broker_consumer=consumer_urls(settings.broker, settings.fetch_max_wait_ms),
    broker_credentials=faust_credentials(settings),
    store="memory://",
    datadir=settings.data_dir,
    topic_partitions=settings.partitions,
    web_port=settings.web_port,
    web_bind=settings.web_host,
    web_in_thread=False,
    consumer_auto_offset_reset="earliest",
    producer_linger=settings.producer_linger_ms / 1000.0,
    producer_request_timeout=settings.producer_request_timeout_s,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    broker_session_timeout=settings.group_session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.group_session_timeout_s / 3),
    # The check compares offsets persisted in a local RocksDB file with the changelog; the
    # memory store persists nothing, and the check crashed the surviving worker of
    # tests/test_scaleout.py during the rebalance after a SIGKILL ("persisted offset ... is
    # higher than the last offset in that topic", faust-streaming issue #158, open).
    recovery_consistency_check=False,
    Worker="streams.faust_worker:Worker",  # the root logger at the level asked for
)

raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                       "value_serializer": "raw"}
clicks_topic = app.topic(settings.clicks_topic, partitions=settings.partitions, **raw)
recommendations_topic = app.topic(settings.recommendations_topic, **raw)
sessions_topic = app.topic(settings.sessions_topic, **raw)
dlq_topic = app.topic(settings.dlq_topic, **raw)
model_deltas_topic = app.topic(settings.model_deltas_topic, partitions=1, **raw)
sessions_by_visitor = app.Table("sessions_by_visitor", default=None, partitions=settings.partitions,
                                key_type=bytes)


class SessionsTable(MutableMapping[bytes, dict]):
    """``sessions_by_visitor`` as the handler writes it: every write goes to the changelog
    partition of the click that made it (the value's ``p``). Faust's own ``table[key] = v``
    takes the partition from its "current event", which a batch of clicks does not have."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: bytes) -> dict:
        value: dict = self.table.data[key]
        return value

    def __setitem__(self, key: bytes, value: dict) -> None:
        self.table.data[key] = value
        self._log(int(value["p"]), key, value, self.table.value_serializer)

    def __delitem__(self, key: bytes) -> None:
        value = self.table.data.pop(key)
        if value is not None and int(value.get("p", -1)) >= 0:
            self._log(int(value["p"]), key, None, "raw")

    def _log(self, partition: int, key: bytes, value: dict | None, value_serializer: Any) -> None:
        """The changelog record Faust's ``send_changelog`` would send (its own serialisation),
        put in the outbox with the batch's other messages."""
        topic = self.table.changelog_topic
        k, headers = topic.prepare_key(key, self.table.key_serializer)
        v, headers = topic.prepare_value(value, value_serializer, headers=headers)
        outbox.put(Record(topic.get_topic_name(), k, v, list(headers or []) or None, partition))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.table.data)

    def __len__(self) -> int:
        return len(self.table.data)


def delivery_failed(failure: DeliveryFailed) -> None:
    """A batch of suggestions, session records, dead letters or changelog writes is lost:
    stop the worker, which is restarted (k8s) and reads the clicks again from the last
    commit, which ``CheckedProducer`` keeps before the loss. (The signal is the log line
    and the restart: a counter would die with the process before a scrape.)"""
    log.error("%s; the worker stops, and the clicks behind them are read again after the "
              "last commit", failure)
    if failure is outbox.failure:  # the first: one crash (and its traceback) is enough
        asyncio.ensure_future(app.crash(failure))


# Faust's aiokafka producer (made at start) and its partitioner (a None key: a random one).
outbox = Outbox(lambda: cast(Any, app.producer)._ensure_producer(),
                lambda topic, key: cast(Any, app.producer).key_partition(topic, key).partition,
                on_failure=delivery_failed,
                exact_ends=frozenset({sessions_by_visitor.changelog_topic.get_topic_name()}))
sessions = SessionsTable(sessions_by_visitor)


engine = Engine(settings.session_config(), settings.recommender_config(), k=settings.k)
saved = snapshot.read(settings.state_dir)
restored = snapshot.restore(saved, settings.recommender_config())
engine.model = restored or engine.model
sharing = ModelSharing.from_snapshot(settings, saved if restored is not None else None)
del saved, restored
log.info("compiled kernels loaded in %.2f s", warm_up(settings.recommender_config(), k=settings.k))
handler = ClickHandler(settings, engine)
outputs = {t.get_topic_name(): t for t in (recommendations_topic, sessions_topic, dlq_topic,
                                           model_deltas_topic)}
m.init_labels()  # sessionrec_build_info is set by streams.metrics from the package version


def arrival_time(msg: Any) -> float:
    """Wall time the click reached this worker. Faust's monitor stamps ``time_in`` (monotonic)
    when the consumer hands the message on, before it waits in the stream buffer; the agent's
    own clock would leave that wait out of the latency histogram."""
    now = time.time()
    time_in = getattr(msg, "time_in", None)
    if time_in is None:
        return now
    return now - max(0.0, time.monotonic() - float(time_in))


async def publish(messages: list[Message]) -> None:
    """Hand messages, with the changelog writes made before them, to the producer in one
    record batch per topic partition (``streams.outbox``), without waiting for delivery:
    Faust flushes the producer before it commits input offsets, so a click is never
    committed before what it produced is sent (at-least-once) while the agent goes on."""
    for msg in messages:
        outbox.put(Record(msg.topic, msg.key, msg.value, msg.headers))
    await outbox.flush()
    sent = time.time()
    for msg in messages:
        if msg.click_arrived is not None:
            m.REC_LATENCY.observe(max(0.0, sent - msg.click_arrived))
            if msg.event_ts is not None:
                m.EVENT_TO_REC.observe(max(0.0, sent - msg.event_ts))


async def catch_up_model() -> None:
    """Merge the other workers' deltas until every one published before this worker started
    is in: a newcomer (or a restarted worker) serves from the shared model, not its own."""
    sharing.start()
    while not sharing.caught_up():
        sharing.merge_into(engine.model)
        await asyncio.sleep(0.05)
    sharing.merge_into(engine.model)


def current(msg: Any) -> bool:
    """Whether a buffered click still belongs to this worker: one fetched before a rebalance
    is left to whoever owns its partition now (Faust skips such messages in a plain stream,
    but a batch may have taken them just before the rebalance), or its session would be
    written behind the new owner's back."""
    return bool(app.flow_control.is_active() and msg.generation_id == app.consumer_generation_id)


@app.agent(clicks_topic)
async def recommend_next(stream: Any) -> None:
    """Clicks, a batch at a time: each is dead-lettered, dropped as a duplicate, or learned
    in turn; then one index query answers the batch (``handler.handle_many``)."""
    await catch_up_model()
    for topic in outputs.values():  # the outbox sends through aiokafka, which declares nothing
        await topic.maybe_declare()
    async for events in stream.take_events(settings.batch_max, settings.batch_wait_s):
        batch = [Incoming(e.key, e.value, e.message.topic, e.message.partition, e.message.offset,
                          arrival_time(e.message)) for e in events if current(e.message)]
        if batch:
            await publish(handler.handle_many(sessions, batch))
        if sharing.enabled and engine.model.share_due(settings.share_max_rows):
            await publish_deltas()  # one part a batch, as the timer's pass takes its turns


@app.timer(settings.sweep_interval_s)
async def close_idle_sessions() -> None:
    """Close sessions idle for longer than the gap (event-time watermark or wall clock)."""
    active = {tp.partition for tp in app.consumer.assignment()
              if tp.topic == settings.clicks_topic}
    deletes, messages = handler.sweep(sessions, active=active)
    for key in deletes:  # SessionsTable sends each delete to the session's own partition
        sessions.pop(key, None)
    await publish(messages)
    handler.recount_live(sessions, active)


@app.timer(1.0)
async def observe() -> None:
    """Index gauges, consumer lag, and the index refresh clicks would otherwise owe."""
    model = engine.model
    # Clicks drive refreshes; when they pause, their last changes would wait for the next
    # click. Same event loop as the agent, so this never overlaps a click.
    model.maybe_refresh(time.monotonic())
    handler.index_watch.observe(model, time.time())
    consumer = app.consumer
    ours = [tp for tp in consumer.assignment() if tp.topic == settings.clicks_topic]
    for p in set(handler.positions) - {tp.partition for tp in ours}:
        del handler.positions[p]  # revoked: if it comes back, start from the committed offset
    committed = getattr(consumer, "_committed_offset", {})  # faust keeps no public position
    lags: dict[tuple[str, int], int] = {}
    for tp in ours:
        hw = consumer.highwater(tp)
        if hw is None:
            continue
        pos = handler.positions.get(tp.partition)
        if pos is None:  # nothing processed here since assignment: resume point is committed
            pos = committed.get(tp)
        lags[(tp.topic, tp.partition)] = m.partition_lag(hw, pos)
    m.set_consumer_lag(lags)


@app.timer(settings.share_interval_s or 3600.0)
async def share_model() -> None:
    """Merge what the other workers learned; publish what this one learned since last time."""
    if not sharing.enabled:
        return
    sharing.merge_into(engine.model)
    while True:  # in parts, each followed by a turn for the clicks (``share_part_rows``)
        await publish_deltas()
        if not engine.model.sharing:
            return
        await asyncio.sleep(0)


async def publish_deltas() -> None:
    """One part of what this worker learned, sent on the deltas topic. Called by the timer
    and, when ``share_max_rows`` rows wait, by the agent between batches. Through the
    outbox, as every output: a delta the broker does not confirm stops the worker (Faust's
    ``send_soon`` only logged it, and the other workers never learned what it carried, nor
    did this one when it restarted from its snapshot and the deltas after it)."""
    key = sharing.worker.encode()
    for value in sharing.publish(engine.model):
        outbox.put(Record(model_deltas_topic.get_topic_name(), key, value))
    await outbox.flush()


@app.timer(settings.snapshot_interval_s or 3600.0)
async def save_model() -> None:
    """Snapshot the model, from a forked child unless ``snapshot_in_child`` is off."""
    await write_snapshot(in_child=settings.snapshot_in_child)


@app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types receivers as a union mypy cannot match
async def save_model_at_stop(sender: Any, **kwargs: Any) -> None:
    """A clean stop (SIGTERM: a rollout, a scale-down, ``sessionrec demo`` ending) saves the
    model as it is: the consumer has stopped, so nothing learned is left out, and the next
    start goes on from it instead of from the last interval's snapshot plus the deltas after
    it. The pod's termination grace period must cover the write (``k8s/``)."""
    await write_snapshot(in_child=False)


snapshot_lock = asyncio.Lock()
"""One snapshot at a time: the stop's waits for an interval's child still writing."""


def model_state(copy: bool = True) -> dict[str, Any]:
    """One snapshot's arrays: the model, and where this worker's sharing stands (taken
    together on the loop: they match)."""
    return {**engine.model.state(copy=copy), **sharing.state()}


async def write_snapshot(in_child: bool) -> None:
    if settings.snapshot_interval_s <= 0 or not len(engine.model.vectors):
        return
    async with snapshot_lock:
        t0 = time.perf_counter()
        if in_child:
            engine.model.flush()  # no index write left on the writer thread: the child has none
            # Views: the child's memory is the model at the fork, which nothing changes there.
            pid = snapshot.save_in_child(lambda: model_state(copy=False), settings.state_dir)
            m.SNAPSHOT_PAUSE.observe(time.perf_counter() - t0)
            try:
                ok = await asyncio.to_thread(snapshot.wait_child, pid)
            except asyncio.CancelledError:  # the lock goes: no child may still be writing
                os.kill(pid, signal.SIGKILL)  # (the waiting thread reaps it)
                raise
        else:
            state = model_state()  # copied between clicks
            m.SNAPSHOT_PAUSE.observe(time.perf_counter() - t0)
            await asyncio.to_thread(snapshot.save, state, settings.state_dir)
            ok = True
        if not ok:
            log.error("the model snapshot was not written (see the child's error above); "
                      "the previous one stays")
            m.SNAPSHOT_FAILURES.inc()
            return
        m.SNAPSHOT_SECONDS.observe(time.perf_counter() - t0)
        m.SNAPSHOT_TIME.set(time.time())


def is_ready() -> bool:
    """Partitions assigned, tables recovered, not rebalancing or recovering, and the model
    caught up with the other workers' deltas. The snapshot (if any) is restored at import,
    before this web server starts."""
    try:
        recovery = app.tables.recovery  # type: ignore[attr-defined]
        recovered = recovery.completed.is_set() and not recovery.in_recovery
        return bool(recovered and not app.rebalancing and app.consumer.assignment()
                    and sharing.caught_up())
    except Exception:  # noqa: BLE001 - not started yet
        return False


@app.page("/metrics")
async def metrics_page(web: Any, request: Any) -> Any:
    m.READY.set(1 if is_ready() else 0)
    m.VOCABULARY.set(len(engine.model.vectors))  # current at every scrape: a merge adds items too
    return web.bytes(generate_latest(m.REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/livez")
async def livez(web: Any, request: Any) -> Any:
    return web.json({"status": "alive"})


@app.page("/readyz")
async def readyz(web: Any, request: Any) -> Any:
    ok = is_ready()
    return web.json({"ready": ok}, status=200 if ok else 503)
