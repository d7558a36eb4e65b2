"""One model across workers: each publishes what it learned on the model-deltas topic and
merges what the others published (``Recommender.share`` / ``Recommender.merge``).

Every worker reads every partition of the deltas topic (assigned, no consumer group: each
needs all of them). A thread reads Kafka and queues raw records; the model is only ever
touched on the event loop, between clicks (``merge_into`` and ``publish`` are called by the
agent and a timer), so learning, merging and serving never overlap.

A worker's deltas carry its id and an increasing sequence number. It skips its own deltas
when it reads them back, except those a crashed incarnation published after the snapshot it
restarted from: a restored model goes on from what it had shared (``ItemVectors.restore``),
and those deltas bring back the rest. A worker with no snapshot replays the whole topic,
so a newcomer gets the model before it serves its first click.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.recommender import Recommender
from streams import metrics as m
from streams.codec import decode_delta, encode_delta
from streams.settings import Settings
from streams.watch import assigned_consumer

log = logging.getLogger("sessionrec")
MAX_MESSAGE_BYTES = 512 * 1024
"""Deltas are split into messages of at most about this size (Kafka's default limit is 1 MiB)."""


def worker_id(settings: Settings) -> str:
    """The configured id, else one kept in the state directory (made on first start)."""
    if settings.worker_id:
        return settings.worker_id
    path = settings.state_dir / "worker-id"
    try:
        return path.read_text().strip() or _new_id(path)
    except FileNotFoundError:
        return _new_id(path)


def _new_id(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    wid = uuid.uuid4().hex[:12]
    path.write_text(wid)
    return wid


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


class DeltaReader:
    """Reads every partition of the deltas topic on a thread, from ``start`` offsets (the
    beginning where none is given); ``ends`` are the topic's end offsets when it started.

    ``ends`` is set once the first fetch of every partition has answered, to the larger of
    the ListOffsets answer and the fetch's high watermark: the local broker (tansu 0.6.0)
    answers ListOffsets with the first offset of the last record batch + 1, and a worker
    called itself caught up short of that batch's other deltas (README, *Delivery
    semantics*). The fetch's high watermark is right there, and never below the true end."""

    def __init__(self, settings: Settings, start: dict[int, int]) -> None:
        self.settings = settings
        self.start_offsets = dict(start)
        self.records: queue.Queue[Record] = queue.Queue()
        self.ends: dict[int, int] | None = None
        self._listed: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-deltas", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _consumer(self) -> Any:
        """Every partition assigned, each from its saved offset or the beginning."""
        from kafka import TopicPartition

        s = self.settings
        options = {**s.kafka_options(), "fetch_max_wait_ms": s.deltas_fetch_max_wait_ms}
        consumer = assigned_consumer(s.broker_address, s.model_deltas_topic, from_beginning=True,
                                     options=options)
        for p, offset in self.start_offsets.items():
            consumer.seek(TopicPartition(s.model_deltas_topic, p), offset)
        parts = consumer.assignment()
        self._listed = {tp.partition: int(off) for tp, off in consumer.end_offsets(list(parts)).items()}
        return consumer

    def _fetched_ends(self, consumer: Any) -> dict[int, int] | None:
        """The ends, once a fetch has answered for every partition (None before)."""
        ends = {}
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                return None
            ends[tp.partition] = max(int(hw), self._listed.get(tp.partition, 0))
        return ends

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()  # TimeoutError while the topic is missing
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        self.records.put(Record(r.partition, r.offset, r.timestamp, r.value))
                if self.ends is None:
                    self.ends = self._fetched_ends(consumer)
            except TimeoutError as exc:  # the topic is not there (yet)
                log.warning("waiting for %s: %s", self.settings.model_deltas_topic, exc)
            except Exception:  # noqa: BLE001 - the broker may be away: reconnect, never die
                log.exception("reading %s failed; retrying", self.settings.model_deltas_topic)
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()


@dataclass
class ModelSharing:
    """This worker's side of the shared model: what it merged, what it published."""

    settings: Settings
    worker: str
    seq: int = 0
    """The last sequence number this worker published (or re-applied after a crash)."""
    offsets: dict[int, int] = field(default_factory=dict)
    """Per deltas partition: the next offset to merge."""
    reader: DeltaReader | None = None

    @classmethod
    def from_snapshot(cls, settings: Settings, saved: dict[str, npt.NDArray[Any]] | None
                      ) -> ModelSharing:
        """Go on from a snapshot's offsets and sequence (``state``), or from the beginning."""
        share = cls(settings, worker_id(settings))
        if saved is not None and "share_offsets" in saved:
            offs = saved["share_offsets"]
            share.offsets = {int(p): int(o) for p, o in zip(offs[0], offs[1], strict=True)}
            share.seq = int(saved["share_seq"][0])
        return share

    @property
    def enabled(self) -> bool:
        return self.settings.share_interval_s > 0

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """For the snapshot, taken with the model's state on the loop: they match."""
        parts = sorted(self.offsets)
        return {"share_offsets": np.array([parts, [self.offsets[p] for p in parts]], dtype=np.int64
                                          ).reshape(2, len(parts)),
                "share_seq": np.array([self.seq], dtype=np.int64)}

    def start(self) -> None:
        if self.enabled and self.reader is None:
            self.reader = DeltaReader(self.settings, self.offsets)
            self.reader.start()

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()

    def caught_up(self) -> bool:
        """Every delta that was on the topic when this worker started has been merged."""
        if not self.enabled:
            return True
        ends = self.reader.ends if self.reader is not None else None
        return ends is not None and all(self.offsets.get(p, 0) >= e for p, e in ends.items())

    def merge_into(self, model: Recommender) -> int:
        """Merge every queued delta of the other workers into ``model``; returns items merged."""
        if self.reader is None:
            return 0
        merged = 0
        now = time.time()
        dim = model.vectors.config.dim
        while True:
            try:
                rec = self.reader.records.get_nowait()
            except queue.Empty:
                return merged
            self.offsets[rec.partition] = rec.offset + 1
            try:
                msg = decode_delta(rec.value, dim)
                if msg.worker == self.worker and msg.seq <= self.seq:
                    m.MODEL_DELTAS.labels(outcome="own").inc()
                    continue
                if msg.worker == self.worker:  # published by this worker before a crash
                    self.seq = msg.seq
                merged += model.merge(msg.delta)
            except ValueError as exc:
                log.warning("skipping model delta at %s/%d/%d: %s", self.settings.model_deltas_topic,
                            rec.partition, rec.offset, exc)
                m.MODEL_DELTAS.labels(outcome="rejected").inc()
                continue
            m.MODEL_DELTAS.labels(outcome="merged").inc()
            m.MODEL_DELTA_ITEMS.labels(direction="merged").inc(len(msg.delta))
            if rec.timestamp_ms > 0:
                m.SHARE_DELAY.observe(max(0.0, now - rec.timestamp_ms / 1000.0))

    def publish(self, model: Recommender) -> list[bytes]:
        """What ``model`` learned since the last call, as message values (empty when there
        is nothing new, or before this worker has caught up with the others): at most
        ``share_part_rows`` changed rows looked at, so the caller calls again while
        ``model.sharing``, giving the clicks their turn in between."""
        if not self.enabled or not self.caught_up():
            return []
        s = self.settings
        delta = model.share(s.share_min_drift, s.share_max_wait, s.share_part_rows)
        if not len(delta):
            return []
        dim = model.vectors.config.dim
        per_message = max(1, MAX_MESSAGE_BYTES // (4 * (2 * dim + 1) + 64))
        out = []
        for part in delta.split(per_message):
            self.seq += 1
            out.append(encode_delta(self.worker, self.seq, part))
        m.MODEL_DELTAS.labels(outcome="published").inc(len(out))
        m.MODEL_DELTA_ITEMS.labels(direction="published").inc(len(delta))
        return out
