"""Offline replay in the field's next-item protocol (session-rec's "evaluation_single").

Both files are replayed in event-time order through the same ``Engine`` the worker runs:
learn from the training file; then, for every test click, the list recommended after the
previous click of the same test session is judged against it, and the click is learned
(prequential) unless ``frozen``. HR@K and MRR@K are averaged over every consecutive pair of
every test session. Reference baselines see the very same events in the same order.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from models.baselines import reference_baselines
from models.engine import Engine
from models.session import Accepted, Click, VisitorState


@dataclass(frozen=True)
class Row:
    session_id: str
    item_id: str
    ts: float
    order: int
    """Row number in the file: ties in time keep file order."""


def read_sessions_tsv(path: str | Path) -> list[Row]:
    """session-rec's prepared format: ``SessionId<TAB>ItemId<TAB>Time`` with a header."""
    rows: list[Row] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader)
        cols = {name.strip(): i for i, name in enumerate(header)}
        try:
            si, ii, ti = cols["SessionId"], cols["ItemId"], cols["Time"]
        except KeyError as exc:
            raise ValueError(f"{path}: header must name SessionId, ItemId and Time") from exc
        for n, rec in enumerate(reader):
            if not rec:
                continue
            rows.append(Row(rec[si], rec[ii], float(rec[ti]), n))
    rows.sort(key=lambda r: (r.ts, r.order))
    return rows


class Baseline(Protocol):
    name: str

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> None: ...

    def recommend(
        self, session_items: list[str] | tuple[str, ...], k: int
    ) -> list[tuple[str, float]]: ...


@dataclass
class Scores:
    """Running HR@K and MRR@K for several cutoffs."""

    cutoffs: tuple[int, ...]
    events: int = 0
    hits: dict[int, int] = field(default_factory=dict)
    rr: dict[int, float] = field(default_factory=dict)

    def add(self, ranked: list[str], target: str) -> int | None:
        """Record one judged event; returns the 1-based rank of the target or None."""
        self.events += 1
        try:
            rank = ranked.index(target) + 1
        except ValueError:
            rank = None
        for k in self.cutoffs:
            if rank is not None and rank <= k:
                self.hits[k] = self.hits.get(k, 0) + 1
                self.rr[k] = self.rr.get(k, 0.0) + 1.0 / rank
        return rank

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"events": self.events}
        for k in self.cutoffs:
            n = max(self.events, 1)
            out[f"hr@{k}"] = round(self.hits.get(k, 0) / n, 6)
            out[f"mrr@{k}"] = round(self.rr.get(k, 0.0) / n, 6)
        return out


@dataclass
class Report:
    model: Scores
    baselines: dict[str, Scores]
    train_clicks: int
    test_clicks: int
    hit_trace: dict[str, list[bool]]
    """Per judged event, in stream order, whether the target was in the top max(cutoffs)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model.as_dict(),
            "baselines": {n: s.as_dict() for n, s in self.baselines.items()},
            "train_clicks": self.train_clicks,
            "test_clicks": self.test_clicks,
        }


def _clicks(rows: Iterable[Row], prefix: str) -> Iterator[tuple[Row, Click]]:
    for r in rows:
        yield r, Click(r.session_id, r.item_id, r.ts, f"{prefix}{r.order}")


def evaluate(
    train: list[Row],
    test: list[Row],
    engine: Engine,
    frozen: bool = False,
    cutoffs: tuple[int, ...] = (10, 20),
    baselines: list[Baseline] | None = None,
    dump: Callable[[str, int, list[tuple[str, float]]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Replay ``train`` then ``test`` (each sorted by time) and score next-item lists."""
    k = max(cutoffs)
    bases: list[Baseline] = list(reference_baselines()) if baselines is None else baselines
    states: dict[str, VisitorState] = {}
    watermark = -math.inf

    def feed(click: Click, recommend: bool) -> tuple[Accepted | None, list[tuple[str, float]] | None]:
        nonlocal watermark
        res = engine.click(states.get(click.visitor_id), click, watermark, clock=click.ts,
                           recommend=recommend)
        watermark = max(watermark, click.ts)
        states[click.visitor_id] = res.state
        recs = res.recommendation.items if res.recommendation is not None else None
        return res.accepted, recs

    for _, click in _clicks(train, "train-"):
        acc = feed(click, recommend=False)[0]
        if acc is not None:
            for b in bases:
                b.learn(click.item_id, acc.context)
        if progress:
            progress(1)

    remaining: dict[str, int] = defaultdict(int)
    for r in test:
        remaining[r.session_id] += 1
    pending: dict[str, tuple[list[str], dict[str, list[str]]]] = {}
    positions: dict[str, int] = defaultdict(int)
    model_scores = Scores(cutoffs)
    base_scores = {b.name: Scores(cutoffs) for b in bases}
    trace: dict[str, list[bool]] = {"model": [], **{b.name: [] for b in bases}}
    engine.learning = not frozen
    for row, click in _clicks(test, "test-"):
        sid = row.session_id
        if sid in pending:
            model_list, base_lists = pending.pop(sid)
            rank = model_scores.add(model_list, click.item_id)
            trace["model"].append(rank is not None and rank <= k)
            for name, lst in base_lists.items():
                rank = base_scores[name].add(lst, click.item_id)
                trace[name].append(rank is not None and rank <= k)
        remaining[sid] -= 1
        has_next = remaining[sid] > 0
        acc, recs = feed(click, recommend=has_next)
        position = positions[sid]
        positions[sid] += 1
        if acc is None:
            continue
        if not frozen:
            for b in bases:
                b.learn(click.item_id, acc.context)
        if has_next and recs is not None:
            session = states[sid].session
            items = session.items if session is not None else [click.item_id]
            pending[sid] = ([i for i, _ in recs], {b.name: [i for i, _ in b.recommend(items, k)]
                                                  for b in bases})
            if dump is not None:
                dump(sid, position, recs)
        if progress:
            progress(1)
    engine.learning = True
    return Report(model_scores, base_scores, len(train), len(test), trace)


def dump_writer(fh: io.TextIOBase) -> Callable[[str, int, list[tuple[str, float]]], None]:
    """session-rec's recommendation format: ``SessionId;Position;Recommendations;Scores``."""
    fh.write("SessionId;Position;Recommendations;Scores\n")

    def write(session_id: str, position: int, recs: list[tuple[str, float]]) -> None:
        items = ",".join(i for i, _ in recs)
        scores = ",".join(f"{s:.6f}" for _, s in recs)
        fh.write(f"{session_id};{position};{items};{scores}\n")

    return write
