"""Decoding clicks and encoding what the worker publishes. Pure functions, no Kafka.

``decode_click`` never raises: it returns a ``Click`` or a ``Rejection`` whose ``reason`` is
one of ``REASONS`` (the DLQ reason and the ``outcome`` label of the clicks counter).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from models.item2vec import VectorDelta
from models.session import Click, Closed

REASONS = (
    "empty_payload",
    "payload_too_large",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_id",
    "key_mismatch",
    "invalid_timestamp",
    "timestamp_too_old",
    "timestamp_in_future",
    "late",
    "processing_error",
)
"""Every reason a click can be rejected for: the decoder's checks in the order they run, then
``late`` (from the session state machine) and ``processing_error`` (the worker failed on it)."""

MIN_TS = 946684800.0  # 2000-01-01T00:00:00Z: earlier event times are not real clicks.


@dataclass(frozen=True)
class Limits:
    """Input limits (settings)."""

    max_payload_bytes: int = 4096
    max_id_len: int = 256
    future_tolerance_s: float = 300.0


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def _check_id(obj: dict[str, Any], name: str, limits: Limits, required: bool) -> str | Rejection:
    if name not in obj or obj[name] is None:
        if required:
            return Rejection("missing_field", f"'{name}' is required")
        return ""
    v = obj[name]
    if not isinstance(v, str):
        return Rejection("wrong_type", f"'{name}' must be a string, got {type(v).__name__}")
    if not v or not v.strip():
        return Rejection("invalid_id", f"'{name}' is empty")
    if len(v) > limits.max_id_len:
        return Rejection("invalid_id", f"'{name}' is longer than {limits.max_id_len} characters")
    return v


def parse_ts(v: Any) -> float | Rejection:
    """Event time as Unix seconds: a number, or an ISO-8601 string with a zone."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return Rejection("wrong_type", f"'ts' must be a number or a string, got {type(v).__name__}")
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return Rejection("invalid_timestamp", "'ts' is not an ISO-8601 time")
        if dt.tzinfo is None or dt.utcoffset() is None:
            return Rejection("invalid_timestamp", "'ts' has no time zone")
        return dt.timestamp()
    ts = float(v)
    if not math.isfinite(ts):
        return Rejection("invalid_timestamp", "'ts' is not finite")
    return ts


def decode_click(
    value: bytes | None, key: bytes | None, now: float, limits: Limits | None = None
) -> Click | Rejection:
    """Validate one raw click from the ``clicks`` topic. ``now`` is wall-clock Unix seconds."""
    lim = limits or Limits()
    if not value:
        return Rejection("empty_payload", "the message has no value")
    if len(value) > lim.max_payload_bytes:
        return Rejection(
            "payload_too_large", f"{len(value)} bytes, more than {lim.max_payload_bytes}"
        )
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"the value is a JSON {type(obj).__name__}, not an object")
    checked: dict[str, str] = {}
    for name, required in (("visitor_id", True), ("item_id", True), ("event_id", False)):
        r = _check_id(obj, name, lim, required)
        if isinstance(r, Rejection):
            return r
        checked[name] = r
    if "ts" not in obj or obj["ts"] is None:
        return Rejection("missing_field", "'ts' is required")
    ts = parse_ts(obj["ts"])
    if isinstance(ts, Rejection):
        return ts
    if key is None:
        return Rejection("key_mismatch", "the message has no key (it must be the visitor_id)")
    if key != checked["visitor_id"].encode("utf-8", "surrogatepass"):
        return Rejection("key_mismatch", "the message key is not the visitor_id")
    if ts < MIN_TS:
        return Rejection("timestamp_too_old", f"event time {ts:.0f} is before 2000-01-01")
    if ts > now + lim.future_tolerance_s:
        return Rejection(
            "timestamp_in_future",
            f"event time is {ts - now:.0f}s ahead of the clock (tolerance {lim.future_tolerance_s:.0f}s)",
        )
    return Click(checked["visitor_id"], checked["item_id"], ts, checked["event_id"])


def derived_event_id(topic: str, partition: int, offset: int) -> str:
    """A stable id for a click that came without one: the same message always gets the same id."""
    digest = hashlib.blake2b(f"{topic}/{partition}/{offset}".encode(), digest_size=8).hexdigest()
    return f"auto-{digest}"


def dlq_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Context for a dead-lettered click; the value itself is forwarded untouched."""
    return [
        ("sessionrec.reason", reason.encode()),
        ("sessionrec.detail", detail.encode("utf-8", "replace")),
        ("sessionrec.source.topic", topic.encode()),
        ("sessionrec.source.partition", str(partition).encode()),
        ("sessionrec.source.offset", str(offset).encode()),
    ]


def encode_recommendation(
    visitor_id: str,
    session_id: str,
    event_id: str,
    items: list[tuple[str, float]],
    source: str,
    model_version: int,
    generated_at: float,
) -> bytes:
    return orjson.dumps(
        {
            "visitor_id": visitor_id,
            "session_id": session_id,
            "event_id": event_id,
            "items": [{"item_id": i, "score": round(s, 6)} for i, s in items],
            "source": source,
            "model_version": model_version,
            "generated_at": generated_at,
        }
    )


def encode_session(closed: Closed) -> bytes:
    s = closed.session
    return orjson.dumps(
        {
            "visitor_id": closed.visitor_id,
            "session_id": s.session_id,
            "clicks": [{"item_id": i, "ts": t} for i, t in zip(s.items, s.times, strict=True)],
            "n_clicks": s.n_clicks,
            "start": s.start,
            "end": s.end,
            "close_reason": closed.reason,
        }
    )


DELTA_VERSION = 1


@dataclass(frozen=True)
class DeltaMessage:
    """One worker's model delta, as published on the model-deltas topic."""

    worker: str
    seq: int
    """Per worker, increasing: a restarted worker tells its own earlier deltas from later ones."""
    delta: VectorDelta


def encode_delta(worker: str, seq: int, delta: VectorDelta) -> bytes:
    """A JSON header line (format, worker, sequence, ids, dim), then the input deltas, output
    deltas and count deltas as little-endian float32: compact, and readable without pickle."""
    n, dim = delta.d_in.shape
    head = orjson.dumps({"v": DELTA_VERSION, "worker": worker, "seq": seq, "dim": dim, "ids": delta.ids})
    body = [np.ascontiguousarray(a, dtype="<f4").tobytes() for a in (delta.d_in, delta.d_out, delta.d_counts)]
    return b"".join([head, b"\n", *body])


def decode_delta(value: bytes | None, dim: int) -> DeltaMessage:
    """The delta in ``value``; ValueError saying what is wrong otherwise."""
    if not value:
        raise ValueError("empty delta message")
    head_end = value.find(b"\n")
    if head_end < 0:
        raise ValueError("delta message has no header line")
    try:
        head = orjson.loads(value[:head_end])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"delta header is not JSON: {exc}") from exc
    if not isinstance(head, dict) or head.get("v") != DELTA_VERSION:
        raise ValueError(f"unknown delta format {head.get('v') if isinstance(head, dict) else head!r}")
    worker, seq, ids = head.get("worker"), head.get("seq"), head.get("ids")
    if not isinstance(worker, str) or not isinstance(seq, int) or not isinstance(ids, list) \
            or not all(isinstance(i, str) for i in ids):
        raise ValueError("delta header needs worker (string), seq (integer) and ids (strings)")
    if head.get("dim") != dim:
        raise ValueError(f"delta has dim {head.get('dim')}, this worker's model {dim}")
    n = len(ids)
    body = value[head_end + 1 :]
    need = 4 * n * (2 * dim + 1)
    if len(body) != need:
        raise ValueError(f"delta body has {len(body)} bytes, {n} items of dim {dim} need {need}")
    arr = np.frombuffer(body, dtype="<f4").astype(np.float32)
    d_in = arr[: n * dim].reshape(n, dim)
    d_out = arr[n * dim : 2 * n * dim].reshape(n, dim)
    return DeltaMessage(worker, seq, VectorDelta(ids, d_in, d_out, arr[2 * n * dim :]))
