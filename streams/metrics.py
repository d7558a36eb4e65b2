"""Prometheus metrics of a worker. Names start with ``sessionrec_``; labels never carry ids.

One module-level registry per process, so ``/metrics`` serves exactly these series (and
the process/platform collectors), whatever else the process imports.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from streams.codec import REASONS

disable_created_metrics()  # the *_created series only double the scrape size here
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CLICKS = Counter("sessionrec_clicks", "Clicks read, by outcome: accepted, duplicate, or the "
                 "rejection reason sent to the DLQ.", ["outcome"], registry=REGISTRY)
CONSUMER_LAG = Gauge("sessionrec_consumer_lag", "Messages behind the partition's high-water mark.",
                     ["topic", "partition"], registry=REGISTRY)
LIVE_SESSIONS = Gauge("sessionrec_live_sessions", "Open sessions held by this worker.",
                      registry=REGISTRY)
SESSIONS_CLOSED = Counter("sessionrec_sessions_closed", "Sessions closed, by reason.", ["reason"],
                          registry=REGISTRY)
SESSION_LENGTH = Histogram("sessionrec_session_length_clicks", "Clicks per closed session.",
                           buckets=(1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233), registry=REGISTRY)
SGD_UPDATES = Counter("sessionrec_sgd_updates", "Skip-gram pair updates applied.",
                      registry=REGISTRY)
TRAINING_LOSS = Gauge("sessionrec_training_loss", "Exponentially smoothed SGNS loss per pair.",
                      registry=REGISTRY)
VOCABULARY = Gauge("sessionrec_vocabulary_items", "Items the model knows.", registry=REGISTRY)
INDEX_ITEMS = Gauge("sessionrec_index_items", "Items in the HNSW index.", registry=REGISTRY)
INDEX_REFRESH = Histogram("sessionrec_index_refresh_seconds", "Time to push changed vectors "
                          "into the index.", buckets=LATENCY_BUCKETS, registry=REGISTRY)
INDEX_STALENESS = Gauge("sessionrec_index_staleness_seconds", "Age of the oldest vector change "
                        "not yet in the index (0 when up to date).", registry=REGISTRY)
RECOMMENDATIONS = Counter("sessionrec_recommendations", "Suggestions published, by source.",
                          ["source"], registry=REGISTRY)
REC_LATENCY = Histogram("sessionrec_recommendation_latency_seconds", "From the click's arrival "
                        "at the worker to its suggestion's send.", buckets=LATENCY_BUCKETS,
                        registry=REGISTRY)
EVENT_TO_REC = Histogram("sessionrec_event_to_recommendation_seconds", "From the click's event "
                         "time to its suggestion's send.",
                         buckets=LATENCY_BUCKETS + (10.0, 30.0, 60.0, 300.0), registry=REGISTRY)
ONLINE_HIT_RATE = Gauge("sessionrec_online_hit_rate", "Share of served lists, over a rolling "
                        "window, that held the visitor's next click in the same session.", ["k"],
                        registry=REGISTRY)
ONLINE_MRR = Gauge("sessionrec_online_mrr", "Rolling mean reciprocal rank of the next click in "
                   "the served list (0 beyond k).", ["k"], registry=REGISTRY)
QUALITY_DRIFT = Counter("sessionrec_quality_drift", "Shifts in the online hit stream detected "
                        "by ADWIN.", registry=REGISTRY)
MODEL_VERSION = Gauge("sessionrec_model_version", "Model version (updates applied).",
                      registry=REGISTRY)
BUILD_INFO = Info("sessionrec_build", "Build of this worker.", registry=REGISTRY)
READY = Gauge("sessionrec_ready", "1 when the worker is ready to serve (partitions assigned, "
              "tables recovered, model and index loaded).", registry=REGISTRY)


def init_labels(ks: tuple[int, ...]) -> None:
    """Create every labelled series at zero so rates and alerts work before the first event."""
    for outcome in ("accepted", "duplicate", *REASONS):
        CLICKS.labels(outcome=outcome)
    for reason in ("gap", "idle", "wallclock"):
        SESSIONS_CLOSED.labels(reason=reason)
    for source in ("model", "fallback"):
        RECOMMENDATIONS.labels(source=source)
    for k in ks:
        ONLINE_HIT_RATE.labels(k=str(k))
        ONLINE_MRR.labels(k=str(k))
