"""Replay a click file, or a synthetic stream, into the clicks topic with kafka-python.

Files: session-rec TSV (``SessionId ItemId Time``), CSV with a column mapping, or JSON lines
of click objects. Rows are sent in event-time order, flat out, at a fixed rate, or at a
speed-up of event time. Keys are visitor ids, as the clicks contract requires.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.synthetic import synthetic_stream


@dataclass(frozen=True)
class OutClick:
    visitor_id: str
    item_id: str
    ts: float
    event_id: str

    def to_json(self) -> bytes:
        d: dict[str, Any] = {"visitor_id": self.visitor_id, "item_id": self.item_id, "ts": self.ts}
        if self.event_id:
            d["event_id"] = self.event_id
        return orjson.dumps(d)


def parse_columns(spec: str | None) -> dict[str, str]:
    """``visitor_id=session,item_id=item,ts=time`` -> our field -> file column."""
    mapping = {"visitor_id": "visitor_id", "item_id": "item_id", "ts": "ts", "event_id": "event_id"}
    if spec:
        for part in spec.split(","):
            ours, _, theirs = part.partition("=")
            if ours.strip() not in mapping or not theirs.strip():
                raise ValueError(f"bad column mapping {part!r}: use e.g. visitor_id=session")
            mapping[ours.strip()] = theirs.strip()
    return mapping


def read_clicks(path: str | Path, fmt: str = "auto", columns: str | None = None) -> list[OutClick]:
    """Read a click file and sort it by event time (ties keep file order)."""
    p = Path(path)
    if fmt == "auto":
        fmt = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(
            p.suffix.lower(), "tsv")
    rows: list[tuple[float, int, OutClick]] = []
    stem = p.stem
    if fmt == "jsonl":
        with open(p, "rb") as fh:
            for n, line in enumerate(fh):
                if not line.strip():
                    continue
                o = orjson.loads(line)
                c = OutClick(str(o["visitor_id"]), str(o["item_id"]), float(o["ts"]),
                             str(o.get("event_id") or f"{stem}-{n}"))
                rows.append((c.ts, n, c))
    else:
        if fmt == "tsv" and columns is None:
            columns = "visitor_id=SessionId,item_id=ItemId,ts=Time"
        cols = parse_columns(columns)
        with open(p, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
            for n, rec in enumerate(reader):
                eid = rec.get(cols["event_id"]) or f"{stem}-{n}"
                c = OutClick(rec[cols["visitor_id"]], rec[cols["item_id"]],
                             float(rec[cols["ts"]]), eid)
                rows.append((c.ts, n, c))
    rows.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in rows]


def synthetic_clicks(clicks: int, items: int, seed: int, end_ts: float | None = None,
                     gap_s: float = 1800.0) -> Iterator[OutClick]:
    """The synthetic stream, with event times shifted to end about now (so none is in the
    future or absurdly old)."""
    end = time.time() if end_ts is None else end_ts
    # Roughly 25 s of event time per click per visitor; visitors ~ clicks/20.
    span = max(3600.0, clicks / max(10, clicks // 20) * 40.0 + 3 * gap_s)
    for c in synthetic_stream(clicks, items=items, start_ts=end - span, gap_s=gap_s, seed=seed):
        yield OutClick(c.visitor_id, c.item_id, min(c.ts, end), c.event_id)


@dataclass
class Summary:
    sent: int = 0
    seconds: float = 0.0
    visitors: int = 0
    items: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (f"sent {self.sent} clicks from {self.visitors} visitors over {self.items} items "
                f"in {self.seconds:.1f}s ({rate:.0f} clicks/s); event time "
                f"{self.first_ts:.0f}..{self.last_ts:.0f}")


def send_clicks(
    producer: Any,
    topic: str,
    clicks: Iterable[OutClick],
    rate: float | None = None,
    speedup: float | None = None,
    progress: Any = None,
) -> Summary:
    """Send clicks keyed by visitor id; pace by ``rate`` (clicks/s) or ``speedup`` (event
    time / wall time), else flat out. Returns what was sent."""
    summary = Summary()
    visitors: set[str] = set()
    items: set[str] = set()
    t0 = time.monotonic()
    ts0: float | None = None
    for n, c in enumerate(clicks):
        if ts0 is None:
            ts0 = c.ts
            summary.first_ts = c.ts
        due = None
        if rate:
            due = t0 + n / rate
        elif speedup:
            due = t0 + (c.ts - ts0) / speedup
        if due is not None:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key=c.visitor_id.encode(), value=c.to_json())
        visitors.add(c.visitor_id)
        items.add(c.item_id)
        summary.sent += 1
        summary.last_ts = c.ts
        if progress is not None:
            progress.update(1)
    producer.flush()
    summary.seconds = time.monotonic() - t0
    summary.visitors = len(visitors)
    summary.items = len(items)
    return summary


def make_producer(address: str, options: dict[str, Any] | None = None) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=address, linger_ms=5, acks=1,
                         max_request_size=4 * 1024 * 1024, **(options or {}))
