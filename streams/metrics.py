"""Prometheus metrics of a worker. Names start with ``sessionrec_``; labels never carry ids.

One module-level registry per process, so ``/metrics`` serves exactly these series (and
the process/platform collectors), whatever else the process imports. The small helpers at
the end hold the bookkeeping a metric needs to keep its meaning (which index refreshes were
already observed, since when changes wait for the index, which partitions are still ours),
so the handler and the app only call them.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from models.recommender import Recommender
from streams.codec import REASONS
from streams.quality import OnlineQuality

disable_created_metrics()  # the *_created series only double the scrape size here
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SERVED_OUTCOMES = ("accepted", "duplicate", "redelivered")
"""Outcomes of a click that do not send it to the DLQ (every other outcome is a DLQ reason)."""
CLOSE_REASONS = ("gap", "idle", "wallclock")
SOURCES = ("model", "fallback")
DELTA_OUTCOMES = ("published", "merged", "own", "rejected")

CLICKS = Counter("sessionrec_clicks", "Clicks read from the clicks topic, by outcome: accepted, "
                 "duplicate, redelivered, or the rejection reason sent to the DLQ (exactly one "
                 "per message).",
                 ["outcome"], registry=REGISTRY)
CONSUMER_LAG = Gauge("sessionrec_consumer_lag", "Messages of a partition held by this worker "
                     "that it has not processed yet (high-water mark minus next offset to "
                     "process).", ["topic", "partition"], registry=REGISTRY)
LIVE_SESSIONS = Gauge("sessionrec_live_sessions", "Open sessions held by this worker.",
                      registry=REGISTRY)
SESSIONS_CLOSED = Counter("sessionrec_sessions_closed", "Sessions closed, by reason (gap, "
                          "idle, wallclock).", ["reason"], registry=REGISTRY)
SESSION_LENGTH = Histogram("sessionrec_session_length_clicks", "Clicks per closed session.",
                           buckets=(1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233), registry=REGISTRY)
SGD_UPDATES = Counter("sessionrec_sgd_updates", "Skip-gram pair updates applied.",
                      registry=REGISTRY)
TRAINING_LOSS = Gauge("sessionrec_training_loss",
                      "Exponentially smoothed SGNS loss per pair of a click, taken before it is learned.",
                      registry=REGISTRY)
VOCABULARY = Gauge("sessionrec_vocabulary_items", "Items the model knows.", registry=REGISTRY)
INDEX_ITEMS = Gauge("sessionrec_index_items", "Items in the HNSW index.", registry=REGISTRY)
INDEX_REFRESH = Histogram("sessionrec_index_refresh_seconds", "Duration of each index refresh "
                          "that wrote vectors (one observation per refresh).",
                          buckets=LATENCY_BUCKETS, registry=REGISTRY)
INDEX_STALENESS = Gauge("sessionrec_index_staleness_seconds", "Age of the oldest vector change "
                        "not yet taken by the index (0 when up to date).", registry=REGISTRY)
RECOMMENDATIONS = Counter("sessionrec_recommendations", "Suggestions published, by source.",
                          ["source"], registry=REGISTRY)
REC_LATENCY = Histogram("sessionrec_recommendation_latency_seconds", "From the click's arrival "
                        "at the worker to its suggestion's send.", buckets=LATENCY_BUCKETS,
                        registry=REGISTRY)
EVENT_TO_REC = Histogram("sessionrec_event_to_recommendation_seconds", "From the click's event "
                         "time to its suggestion's send.",
                         buckets=LATENCY_BUCKETS + (10.0, 30.0, 60.0, 300.0), registry=REGISTRY)
ONLINE_HIT_RATE = Gauge("sessionrec_online_hit_rate", "Share of served lists, over a rolling "
                        "window, that held the visitor's next click in the same session "
                        "(absent until the first list is judged).", ["k"], registry=REGISTRY)
ONLINE_MRR = Gauge("sessionrec_online_mrr", "Rolling mean reciprocal rank of the next click in "
                   "the served list (0 beyond k; absent until the first list is judged).", ["k"],
                   registry=REGISTRY)
ONLINE_JUDGED = Counter("sessionrec_online_judged", "Served lists judged by the visitor's next "
                        "click (the volume behind the online hit rate).", registry=REGISTRY)
ONLINE_WINDOW = Gauge("sessionrec_online_window_lists", "Judged lists in the rolling window the "
                      "online hit rate and MRR are computed over.", registry=REGISTRY)
QUALITY_DRIFT = Counter("sessionrec_quality_drift", "Shifts in the online hit stream detected "
                        "by ADWIN.", registry=REGISTRY)
SNAPSHOT_SECONDS = Histogram("sessionrec_model_snapshot_seconds", "Time to write each model snapshot.",
                             registry=REGISTRY)
SNAPSHOT_PAUSE = Histogram("sessionrec_model_snapshot_pause_seconds", "Time the clicks waited for "
                           "each model snapshot: the fork of the process that writes it, or the "
                           "copy of the model when it is written in process.", registry=REGISTRY)
SNAPSHOT_FAILURES = Counter("sessionrec_model_snapshot_failures", "Model snapshots that could not be "
                            "written (the previous one stays).", registry=REGISTRY)
SNAPSHOT_TIME = Gauge("sessionrec_model_snapshot_timestamp_seconds", "Unix time of the last model "
                      "snapshot written.", registry=REGISTRY)
MODEL_DELTAS = Counter("sessionrec_model_deltas", "Model delta messages, by outcome: published "
                       "(by this worker), merged (another worker's), own (this worker's, read "
                       "back), rejected (unreadable).", ["outcome"], registry=REGISTRY)
MODEL_DELTA_ITEMS = Counter("sessionrec_model_delta_items", "Item vectors in model deltas, by "
                            "direction (published, merged).", ["direction"], registry=REGISTRY)
SHARE_DELAY = Histogram("sessionrec_model_share_delay_seconds", "From another worker's publication "
                        "of a model delta to its merge here.", buckets=LATENCY_BUCKETS,
                        registry=REGISTRY)
MODEL_VERSION = Gauge("sessionrec_model_version", "Model version (updates applied).",
                      registry=REGISTRY)
BUILD_INFO = Info("sessionrec_build", "Build of this worker.", registry=REGISTRY)
READY = Gauge("sessionrec_ready", "1 when the worker is ready to serve (partitions assigned, "
              "tables recovered, model and index loaded).", registry=REGISTRY)


def package_version() -> str:
    """The installed sessionrec version, so ``sessionrec_build_info`` follows releases."""
    try:
        return importlib.metadata.version("sessionrec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.info({"version": package_version()})


def init_labels(ks: tuple[int, ...] = ()) -> None:
    """Create every labelled counter at zero so rates and alerts work before the first event.

    The online quality gauges (``ks`` is accepted for older callers and not used) are left
    out on purpose: before any list is judged the hit rate is unknown, and a 0 would read as
    "the model is useless" on dashboards and alerts.
    """
    for outcome in (*SERVED_OUTCOMES, *REASONS):
        CLICKS.labels(outcome=outcome)
    for reason in CLOSE_REASONS:
        SESSIONS_CLOSED.labels(reason=reason)
    for outcome in DELTA_OUTCOMES:
        MODEL_DELTAS.labels(outcome=outcome)
    for direction in ("published", "merged"):
        MODEL_DELTA_ITEMS.labels(direction=direction)
    for source in SOURCES:
        RECOMMENDATIONS.labels(source=source)


def record_quality(quality: OnlineQuality) -> None:
    """After ``quality.clicked``: if the click judged a served list (hit or miss), publish the
    new rolling values, count the judgement, and count a drift if ADWIN flagged one on it."""
    if not quality.last_judged:
        return
    ONLINE_JUDGED.inc()
    ONLINE_WINDOW.set(quality.window_size)
    for k in quality.ks:
        ONLINE_HIT_RATE.labels(k=str(k)).set(quality.hit_rate(k))
        ONLINE_MRR.labels(k=str(k)).set(quality.mrr(k))
    if quality.drifts and quality.drifts[-1].at_event == quality.judged:
        QUALITY_DRIFT.inc()


class IndexWatch:
    """Index metrics with their meaning kept: one refresh-duration observation per write,
    and staleness as the age of the oldest change the index has not taken.

    Call ``observe`` right after every batch of clicks (so a change is dated when it
    happens) and on a timer (so staleness keeps growing, visibly, if refreshes stop).
    """

    def __init__(self) -> None:
        self._inserts_seen = 0
        self._rounds_seen = 0
        self.pending_since: float | None = None
        """When the rows changed since the last refresh began started changing."""
        self.round_since: float | None = None
        """The same for the rows the last refresh took, while some are still unwritten."""

    def observe(self, model: Recommender, now: float) -> float:
        """Update index gauges from the model; returns the staleness in seconds."""
        index, vectors = model.index, model.vectors
        if index.inserts != self._inserts_seen:
            INDEX_REFRESH.observe(index.last_refresh_s)
            self._inserts_seen = index.inserts
        if model.rounds != self._rounds_seen:  # a refresh took the changed rows
            self._rounds_seen = model.rounds
            self.round_since, self.pending_since = self.pending_since or now, None
        if not model.indexing:  # what it took is written (``refresh_spread``: in parts)
            self.round_since = None
        if vectors.changed > 0 and self.pending_since is None:
            self.pending_since = now
        oldest = min((t for t in (self.round_since, self.pending_since) if t is not None), default=now)
        staleness = max(0.0, now - oldest)
        INDEX_STALENESS.set(staleness)
        INDEX_ITEMS.set(len(index))
        VOCABULARY.set(len(vectors))
        return staleness


_lag_series: set[tuple[str, str]] = set()


def partition_lag(highwater: int, position: int | None) -> int:
    """Messages not processed yet: ``position`` is the next offset to process (None: nothing
    committed or processed, so everything up to the high-water mark is behind)."""
    return max(0, highwater - (position or 0))


def set_consumer_lag(lags: Mapping[tuple[str, int], int]) -> None:
    """Publish the lag of every partition this worker holds now, and drop the series of those
    it no longer holds: a revoked partition's last value would otherwise stay forever and
    page someone about lag that another worker is already working off."""
    current = {(topic, str(p)) for topic, p in lags}
    for topic, p in _lag_series - current:
        CONSUMER_LAG.remove(topic, p)
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(topic=topic, partition=str(partition)).set(lag)
    _lag_series.clear()
    _lag_series.update(current)
