"""Every knob, read from ``SESSIONREC_*`` environment variables in this one place.

``Settings.from_env()`` is the only reader of the environment; everything else receives a
``Settings`` (or the model configs it builds) as data. This module imports no Kafka or Faust,
so the offline replay uses the same defaults as the worker.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from models.index import IndexConfig
from models.item2vec import Item2VecConfig
from models.recommender import RecommenderConfig
from models.session import SessionConfig
from streams.codec import Limits

PREFIX = "SESSIONREC_"


@dataclass(frozen=True)
class Settings:
    """All settings; the environment variable of ``field_name`` is ``SESSIONREC_FIELD_NAME``."""

    # Kafka
    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "sessionrec"
    clicks_topic: str = "clicks"
    recommendations_topic: str = "recommendations"
    sessions_topic: str = "sessions"
    dlq_topic: str = "clicks-dlq"
    model_deltas_topic: str = "model-deltas"
    """Where each worker publishes what it learned, for the others (one partition)."""
    partitions: int = 4
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL. Explicit, never guessed from which
    credentials happen to be mounted: a Secret appearing must not change the protocol."""
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ca_file: str = ""
    """PEM file of the CA that signed the brokers' certificates (empty: the system's)."""
    # Worker
    web_port: int = 6066
    web_host: str = "0.0.0.0"
    data_dir: str = "./data"
    log_level: str = "info"
    sweep_interval_s: float = 5.0
    fetch_max_wait_ms: int = 10
    """The longest the broker may hold the worker's fetches of new clicks (Faust fixes
    1,500 ms; Apache Kafka answers as soon as data arrives, the local broker holds a fetch
    for all of it). Measured on a fresh local broker, click to suggestion at 400 clicks/s,
    p50 / p99: the pass-through 51 / 87 ms at 100 and 21 / 36 ms at 10; the worker
    59 / 108 ms at 100 and 38 / 106 ms at 10 (with the deltas' own wait below). An idle
    worker costs the broker one empty fetch per wait."""
    deltas_fetch_max_wait_ms: int = 500
    """The same for the thread that reads the other workers' model deltas (published every
    ``share_interval_s``): a short wait there buys nothing and takes the interpreter from
    the event loop. With it at 10 ms beside clicks at 10 ms the worker above measured
    57-78 ms at p50 instead of 38."""
    producer_linger_ms: float = 5.0
    """How long the worker's producer gathers the messages Faust sends itself into one
    request (Faust's default is 0). None of the worker's outputs wait for it: suggestions,
    session writes, dead letters and model deltas go out as whole batches
    (``streams.outbox``)."""
    producer_request_timeout_s: float = 1200.0
    """How long a produced batch may wait for the broker before it fails (Faust's default).
    A failed batch of the worker's output stops the worker before its clicks are committed
    (``streams.outbox``): a broker unreachable for longer than this restarts the worker."""
    batch_max: int = 64
    """Clicks the worker takes at once: each is learned in turn, then one index query
    answers them all (1: one click at a time)."""
    batch_wait_s: float = 0.005
    """How long a batch waits to fill before it is handled as it is: the most a click waits
    for others when clicks are few."""
    group_session_timeout_s: float = 10.0
    """A worker that stops heartbeating leaves the consumer group after this long, and its
    partitions (with their sessions) move to the others."""
    snapshot_interval_s: float = 60.0
    """The model is saved to ``data_dir`` this often (0: never) and loaded from it at start."""
    snapshot_in_child: bool = True
    """Write the interval's snapshot from a forked child (copy-on-write: the clicks wait for
    the fork, not for a copy of the model); off: copied on the event loop, then written on a
    thread. A child's pages the worker changes meanwhile count twice against its memory."""
    worker_id: str = ""
    """Names this worker's model deltas; empty: a random id kept in ``data_dir``, so a worker
    restarted on its state directory is the same worker."""
    share_interval_s: float = 1.0
    """Workers publish what they learned and merge the others' this often (0: a worker keeps
    its model to itself; with several workers each then serves a different model)."""
    share_min_drift: float = 0.01
    """Vectors that moved by less (relative) wait for a later delta, where their change adds up."""
    share_max_wait_s: float = 60.0
    """A vector held back by ``share_min_drift`` goes out after this long anyway (0: never),
    which bounds what a worker keeps to compute its deltas. Counted in shares of
    ``share_interval_s``: shares ``share_max_rows`` starts early make the wait shorter."""
    share_max_rows: int = 65536
    """A share also begins when this many changed rows wait for one (0: only on the
    interval). It bounds what a worker keeps to compute its deltas, about ``dim * 4 + 32``
    bytes a row (at dim 64, 65,536 rows: 19 MiB), however fast and however widely it learns;
    under it, shares keep to the interval."""
    share_part_rows: int = 4096
    """A share looks at this many changed rows at a time, and the clicks waiting get their
    turn between parts (0: all at once). At 1M items a whole share held the event loop
    80-92 ms once a second."""

    @property
    def share_max_wait(self) -> int:
        """``share_max_wait_s`` in shares (0: no limit)."""
        if self.share_max_wait_s <= 0 or self.share_interval_s <= 0:
            return 0
        return max(1, math.ceil(self.share_max_wait_s / self.share_interval_s))
    # Sessions
    session_gap_s: float = 1800.0
    late_tolerance_s: float = 3600.0
    session_cap: int = 200
    dedupe_ids: int = 256
    # Input limits
    max_payload_bytes: int = 4096
    max_id_len: int = 256
    future_tolerance_s: float = 300.0
    # Learning
    dim: int = 64
    window: int = 2
    negatives: int = 5
    negative_pool: int = 20
    learning_rate: float = 0.3
    min_learning_rate: float = 0.03
    sampling_power: float = 0.75
    distance_power: float = 0.0
    learn_repeats: bool = True
    replay_pairs: int = 15
    replay_buffer: int = 20_000
    seed: int = 0
    # Index and ranking
    k: int = 20
    index_refresh_s: float = 0.5
    index_refresh_spread: float = 0.5
    index_space: str = "mips"
    index_m: int = 16
    index_ef: int = 100
    index_ef_construction: int = 40
    index_band_ratio: float = 1.5
    index_band_floor: float = 1.0
    index_exact_below: int = 16_384
    index_one_band_below: int = 8_192
    index_one_band_scan: float = 0.95
    index_scan_per_insert: float = 10_000.0
    index_scan_per_walk: float = 32_768.0
    index_compact_ratio: float = 1.0
    blas_threads: int = 1
    """Threads BLAS may use (0: its own default, every core). The index screens its small
    bands with BLAS products of a batch of queries by a few thousand vectors; OpenBLAS
    spreads those over every core and its threads spin while they wait, so at 2 threads
    ``bench core`` ran 1.1-1.3x the clicks/s on twice the CPU (per CPU second: 5,400 against
    8,060 at 10k items, 2,900 against 5,050 at 100k), and the spinning core is the one
    the Kafka client and the background index writer need."""
    index_drift_tol: float = 0.15
    """A vector is rewritten in the index once it moved by this much (relative). The index
    only proposes candidates, re-scored against the current vectors, so it can lag a little,
    but not much: a vector that moved less stays as indexed however long the stream runs.
    0.25 served recall@20 .913 at the end of ``bench core``'s default stream (1M clicks,
    77.5k items learned), .956 at 300k clicks; 0.15 .961 at 1M, 0.1 .981 (and .995 at 300k).
    0.1 also cost the 100k-preloaded catalogue 0.81-0.83x its clicks/s and the curve's 1M
    size 0.57 of 10k's (0.69 at 0.25); 0.15 measured 0.705 there and the same memory."""
    index_writes_per_click: float = 0.0
    index_bulk_threads: int = 0
    index_background_writes: bool = False
    """Write the index on a thread of its own, beside the clicks: for a worker with a core
    to spare (``bench core``: 1.2x clicks/s, per-batch p99 halved). Off by default: where
    the broker shares the cores (this machine), end-to-end latency did not improve.
    ``sessionrec evaluate`` always writes in line, so a replay gives the same figures."""
    candidates: int = 64
    """Index candidates re-scored per suggestion. On the validation split 100 -> 64 left
    HR@20 / MRR@20 as they were (.6771 / .3690 -> .6773 / .3690; 50: .6752, 30: .6692)
    and ran the 100k-item catalogue 1.19x faster: a smaller heap prunes more bands."""
    query_items: int = 5
    recency_decay: float = 0.5
    popularity_weight: float = 0.75
    reverse_weight: float = 1.0
    reverse_items: int = 1
    exclude_seen: bool = False
    seen_boost: float = 12.0
    seen_decay: float = 0.5

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by ``SESSIONREC_*`` variables, overridden by ``overrides``."""
        src = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = src.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw, type(getattr(cls, f.name)))
        values.update(overrides)
        return cls(**values)

    @property
    def broker_address(self) -> str:
        """host:port, as kafka-python wants it."""
        return self.broker.split("://", 1)[-1].split(";")[0]

    @property
    def security_protocol(self) -> str:
        return self.kafka_security_protocol.strip().upper() or "PLAINTEXT"

    def kafka_options(self) -> dict[str, Any]:
        """Security options for kafka-python clients (producer, consumer, admin)."""
        proto = self.security_protocol
        opts: dict[str, Any] = {"security_protocol": proto}
        if proto.startswith("SASL"):
            opts.update(sasl_mechanism=self.kafka_sasl_mechanism,
                        sasl_plain_username=self.kafka_sasl_username,
                        sasl_plain_password=self.kafka_sasl_password)
        if proto.endswith("SSL") and self.kafka_ca_file:
            opts["ssl_cafile"] = self.kafka_ca_file
        return opts

    def limit_threads(self) -> None:
        """Apply ``blas_threads`` to this process (threadpoolctl: it finds the BLAS numpy
        loaded, whichever vendor, and sets its pool at run time, where an environment
        variable only works if set before numpy is imported)."""
        if self.blas_threads > 0:
            threadpool_limits(limits=self.blas_threads, user_api="blas")

    @property
    def state_dir(self) -> Path:
        return Path(self.data_dir)

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            gap_s=self.session_gap_s,
            late_tolerance_s=self.late_tolerance_s,
            cap=self.session_cap,
            dedupe_ids=self.dedupe_ids,
        )

    def limits(self) -> Limits:
        return Limits(
            max_payload_bytes=self.max_payload_bytes,
            max_id_len=self.max_id_len,
            future_tolerance_s=self.future_tolerance_s,
        )

    def recommender_config(self) -> RecommenderConfig:
        return RecommenderConfig(
            item2vec=Item2VecConfig(
                dim=self.dim,
                window=self.window,
                negatives=self.negatives,
                negative_pool=self.negative_pool,
                learning_rate=self.learning_rate,
                min_learning_rate=self.min_learning_rate,
                power=self.sampling_power,
                distance_power=self.distance_power,
                learn_repeats=self.learn_repeats,
                replay_pairs=self.replay_pairs,
                replay_buffer=self.replay_buffer,
                seed=self.seed,
                shared=self.share_interval_s > 0,
            ),
            index=IndexConfig(
                space=self.index_space,
                m=self.index_m,
                ef=self.index_ef,
                ef_construction=self.index_ef_construction,
                band_ratio=self.index_band_ratio,
                band_floor=self.index_band_floor,
                exact_below=self.index_exact_below,
                one_band_below=self.index_one_band_below,
                one_band_scan=self.index_one_band_scan,
                scan_per_insert=self.index_scan_per_insert,
                scan_per_walk=self.index_scan_per_walk,
                compact_ratio=self.index_compact_ratio,
                drift_tol=self.index_drift_tol,
                bulk_threads=self.index_bulk_threads,
                seed=self.seed,
            ),
            refresh_interval_s=self.index_refresh_s,
            refresh_spread=self.index_refresh_spread,
            background_writes=self.index_background_writes,
            index_writes_per_click=self.index_writes_per_click,
            candidates=self.candidates,
            query_items=self.query_items,
            recency_decay=self.recency_decay,
            popularity_weight=self.popularity_weight,
            reverse_weight=self.reverse_weight,
            reverse_items=self.reverse_items,
            exclude_seen=self.exclude_seen,
            seen_boost=self.seen_boost,
            seen_decay=self.seen_decay,
        )


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from exc
