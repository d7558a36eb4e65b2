"""The serving model: item vectors + HNSW index + popularity, behind two verbs.

``learn(item_id, context)`` trains on one accepted click; ``recommend(session_items, k)``
answers "what next?" for a live session. The worker and the offline replay (``evaluate``)
call exactly these, so offline quality is the quality the worker serves.

Ranking: the session query is a recency-weighted mean of the *input* vectors of its latest
items; HNSW returns candidates by inner product against *output* vectors (the direction
SGNS trained: earlier item -> later item); candidates, plus the session's own items, are
re-scored exactly against the current vectors:

    score(c) = q . out(c) + reverse_weight * in(c) . q_out
               + popularity_weight * log(1 + clicks(c)) + seen(c)

With negatives drawn from clicks**0.75, SGNS drives ``in(a) . out(c)`` towards
log P(c | a) - 0.75 log clicks(c) + const, so adding the log click count back turns the
score into (up to a constant) log P(c | a): the vectors carry the association and the count
the base rate. The index holds (out(c), log(1 + clicks(c))) and is queried with
(q, popularity_weight), so its candidates are ranked by the same score minus ``seen``.
The second term reads the same pairs the other way round: ``q_out`` is the same
recency-weighted mean of the session items' *output* vectors, so ``in(c) . q_out`` is high
when the session's items usually come *after* c: items bought together are clicked in
either order, and every trained pair then informs the ranking twice. It is added when the
index's candidates are re-scored (exact, over ``candidates`` rows), so the index keeps its
one-direction keys.
``seen(c)`` is a bonus for items already in the session, decaying with how long ago they
were clicked (re-clicks are a large share of next clicks in e-commerce logs). When none of
the session's items has a trained vector, the answer is the popularity list.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models import topk
from models.index import IndexConfig, VectorIndex
from models.item2vec import Item2VecConfig, ItemVectors, VectorDelta
from models.sgns import FloatArray, IntArray

Source = Literal["model", "fallback"]


@dataclass(frozen=True)
class RecommenderConfig:
    """Ranking settings (constructor arguments are the settings)."""

    item2vec: Item2VecConfig = field(default_factory=Item2VecConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    refresh_interval_s: float = 0.5
    """The index takes new and changed vectors at least this often (clock of the caller)."""
    refresh_spread: float = 0.5
    """The rows one refresh takes are written a part at each call of ``maybe_refresh`` (each
    batch), in step with the caller's clock, over this fraction of ``refresh_interval_s``;
    what is left when the next refresh is due is written first, and calls as far apart as
    the spread (clicks paused) write at once. A change is then visible within (1 + spread)
    intervals plus the write. 0: all at once, as one batch's work (at
    100k items one batch in 70 waited 29-101 ms for it, against 6 ms for the others)."""
    background_writes: bool = False
    """Write the index on a thread of its own: the caller only picks and copies the changed
    vectors, and hnswlib's inserts (which release the GIL) run beside the clicks, on another
    core. Off: written before ``refresh`` returns, so a replay is reproducible (offline
    evaluation, tests)."""
    index_writes_per_click: float = 0.0
    """0: every changed vector is written at each refresh, so a change is visible within
    ``refresh_interval_s`` plus the write. Above 0: a budget of drifted-vector rewrites per
    click learned since the last refresh (new items always go in), for operators who trade
    freshness for throughput: at 0.5 the served recall@20 while a synthetic stream ran fell
    from 0.97 to 0.78 (``sessionrec bench core``), as nearly every vector keeps moving."""
    candidates: int = 64
    """Index candidates re-scored per suggestion (``Settings.candidates``)."""
    query_items: int = 5
    recency_decay: float = 0.5
    popularity_weight: float = 0.75
    """Weight of log(1 + clicks) in the score (0: vectors only). Negatives are drawn from
    clicks**0.75, so the SGNS optimum is in.out = log P(c|a) - 0.75 log clicks(c) + const:
    the default adds back exactly what the sampler took out."""
    reverse_weight: float = 1.0
    """Weight of in(c) . q_out, the reverse direction (0: forward only). Measured (yoochoose
    100k, prequential): 0 -> 1 lifts HR@20 by about 3.5 points and MRR@20 by about 1."""
    reverse_items: int = 1
    """How many of the latest session items make ``q_out`` (same recency weights as ``q``;
    1: the last item only, which measured better for MRR than the same mix as ``q``)."""
    exclude_seen: bool = False
    seen_boost: float = 12.0
    """Added to the score of the session's latest item; older session items get it times
    ``seen_decay`` per step back (a re-click is often next)."""
    seen_decay: float = 0.5
    min_count: int = 1
    """An item needs this many clicks before its vector is trusted for a query."""
    popularity_half_life_clicks: float = 100_000.0


@dataclass(frozen=True)
class Recommendation:
    items: list[tuple[str, float]]
    source: Source
    model_version: int


class IndexKeys:
    """What the index holds per item: its output vector and log(1 + clicks), so that an inner
    product with (q, popularity_weight) is the score without the session bonus.

    Built from the model's tables for the rows asked, on the thread that owns them, instead
    of kept as a table: a stored copy cost (dim + 1) floats per item (260 MB at 1M items),
    and every row whose key changed is reported by ``take_dirty`` anyway."""

    def __init__(self, vectors: ItemVectors) -> None:
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.vectors)

    piece = 65_536
    """Rows gathered at a time: ``w_out[rows]`` is a copy of its own before it lands in the
    keys, and asked for every row of a 1M catalogue at once it held 244 MiB beside the keys'
    248 (``bench core``'s retrieval check set the process's peak so)."""

    def __getitem__(self, rows: IntArray) -> FloatArray:
        vec = self.vectors
        r = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(r), vec.config.dim + 1), dtype=np.float32)
        for lo in range(0, len(r), self.piece):
            part = r[lo : lo + self.piece]
            out[lo : lo + len(part), :-1] = vec.w_out[part]
            out[lo : lo + len(part), -1] = np.log1p(vec.vocab.counts[part])
        return out


class Recommender:
    """Learns from clicks and recommends next items for a session."""

    popular_keep = 200
    """How many of the most popular items are kept ranked for the fallback."""
    pop_limit = 1e100
    """Click weights grow by ``_pop_growth`` a click (decay without touching every item);
    before one would pass this, every weight is divided down."""

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.vectors = ItemVectors(self.config.item2vec)
        dim = self.config.item2vec.dim
        self.index = VectorIndex(dim + 1, self.config.index)
        self.keys = IndexKeys(self.vectors)
        """What the index holds per item, built for the rows asked (not stored)."""
        self.popularity = np.zeros(1024, dtype=np.float64)
        self._pop_scale = 1.0
        self._pop_growth = 2.0 ** (1.0 / self.config.popularity_half_life_clicks)
        self._top_buf: IntArray = np.zeros(self.popular_keep, dtype=np.int64)
        """``_top_buf[:_top_n[0]]``: rows of the most popular items, best first (kept up to
        date click by click, in place by ``topk.bump_top``)."""
        self._top_n = np.zeros(1, dtype=np.int64)
        self._last_refresh: float | None = None
        self._last_call: float | None = None
        self._round: IntArray = np.zeros(0, dtype=np.int64)
        """The rows the last refresh took; ``_round[:_round_done]`` are written."""
        self._round_done = 0
        self.rounds = 0
        """Refreshes begun (each takes the rows changed since the one before)."""
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[int] | None = None
        """The background write in flight (``background_writes``): one at a time, and the
        index's per-row state is not staged again until it is done."""
        self.clicks_learned = 0
        self._clicks_at_refresh = 0

    # -- learning -------------------------------------------------------------------------
    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> float:
        """Learn from one accepted click: vectors, and the popularity the fallback uses."""
        return float(self.learn_many([(item_id, context)])[0])

    def learn_many(self, clicks: Sequence[tuple[str, Sequence[str]]]) -> npt.NDArray[np.float64]:
        """``learn`` for each (item, context) in turn (``ItemVectors.learn_many``: one
        compiled call); returns each click's loss."""
        losses = self.vectors.learn_many(clicks)
        row_of = self.vectors.vocab.get  # every one known: learning added it
        self._ensure_popularity(len(self.vectors))
        rows = np.fromiter(map(row_of, (item for item, _ in clicks)), dtype=np.int64,
                           count=len(clicks))
        while len(rows):
            # Exponentially decayed counts without touching every item: each click weighs
            # ``_pop_growth`` times the one before; before the weights overflow, all are
            # divided down.
            done, self._pop_scale = topk.add_clicks(self._top_buf, self._top_n, self.popularity, rows,
                                                    self._pop_scale, self._pop_growth, self.pop_limit)
            rows = rows[done:]
            if len(rows):
                self.popularity /= self._pop_scale * self._pop_growth  # the next click weighs 1
                self._pop_scale = 1.0 / self._pop_growth
                top = self._top  # the division may have made weights equal: order ties by row
                self._top = top[np.lexsort((top, -self.popularity[top]))]
        self.clicks_learned += len(clicks)
        return losses

    def _ensure_popularity(self, need: int) -> None:
        if need > len(self.popularity):
            grown = np.zeros(max(len(self.popularity) * 2, need), dtype=np.float64)
            grown[: len(self.popularity)] = self.popularity
            self.popularity = grown

    # -- several copies of one model ------------------------------------------------------
    def share(self, min_drift: float = 0.0, max_wait: int = 0, limit: int = 0) -> VectorDelta:
        """What this copy learned since it last shared (``ItemVectors.share``; ``limit``:
        a part of it, and ``sharing`` until the last part)."""
        return self.vectors.share(min_drift, max_wait, limit)

    @property
    def sharing(self) -> bool:
        return self.vectors.sharing

    def share_due(self, max_rows: int) -> bool:
        """Whether to call ``share`` now, before the interval is up: a pass in parts is
        under way, or ``max_rows`` (> 0) rows wait to be shared. The bound is what keeps
        the base's memory in check when the interval alone would not: it grows with the click
        rate, the catalogue's breadth and the interval (at 1M items in ``bench core``, up to
        84k rows, about 36 a click), and the base holds a copy of each row."""
        return self.vectors.sharing or 0 < max_rows <= self.vectors.unshared

    def merge(self, delta: VectorDelta) -> int:
        """Add another copy's learning: vectors, counts, and its clicks to the popularity the
        fallback ranks by (as if clicked now). Returns the items merged; their changed index
        keys are written at the next refresh."""
        rows = self.vectors.merge(delta)
        self._ensure_popularity(len(self.vectors))
        clicked = delta.d_counts > 0
        np.add.at(self.popularity, rows[clicked], delta.d_counts[clicked] * self._pop_scale)
        for row in np.unique(rows[clicked]).tolist():
            topk.bump_top(self._top_buf, self._top_n, self.popularity, row)
        return len(rows)

    @property
    def _top(self) -> IntArray:
        """Rows of the most popular items, best first."""
        return self._top_buf[: int(self._top_n[0])]

    @_top.setter
    def _top(self, rows: IntArray) -> None:
        n = min(len(rows), self.popular_keep)
        self._top_buf[:n] = rows[:n]
        self._top_n[0] = n

    # -- snapshots ------------------------------------------------------------------------
    def state(self, index: bool | None = None, copy: bool = True) -> dict[str, npt.NDArray[Any]]:
        """The model as plain arrays: vectors, counts, replay, popularity, and (``index``)
        the HNSW graphs, so that ``restore`` loads them instead of inserting every vector
        again (measured about 0.6 ms per item). ``None``: the index when it holds a graph;
        bands that are arrays are rebuilt from the vectors faster than they load (2.7 s
        against 3.9 s at 1M items, every band an array), and would double the file.
        ``copy`` False: the large arrays as views (a forked writer's memory is frozen)."""
        if index is None:
            index = self.index.graphs > 0
        self.flush()
        n = len(self.vectors)
        out = self.vectors.state(copy)
        out.update(popularity=self.popularity[:n].copy(), top=self._top.copy(),
                   pop_scale=np.array([self._pop_scale]),
                   clicks_learned=np.array([self.clicks_learned], dtype=np.int64))
        if index:
            out.update(self.index.state(copy))
        return out

    @classmethod
    def restore(cls, state: dict[str, npt.NDArray[Any]], config: RecommenderConfig | None = None
                ) -> Recommender:
        """A model that goes on from ``state`` (same dimension), its index rebuilt."""
        model = cls(config)
        model.vectors.restore(state)
        n = len(model.vectors)
        pop = state["popularity"]
        model.popularity = np.zeros(max(1024, n, len(pop)), dtype=np.float64)
        model.popularity[: len(pop)] = pop
        model._pop_scale = float(state["pop_scale"][0])
        model._top = state["top"].astype(np.int64)
        model.clicks_learned = model._clicks_at_refresh = int(state["clicks_learned"][0])
        dim = model.vectors.config.dim + 1
        saved = VectorIndex.restore(dim, model.config.index, state)  # None: not saved, or other settings
        if saved is not None and len(state["index_label"]) <= n:
            model.index = saved  # every row is checked against it: only what moved is rewritten
        model.refresh()
        model.flush()  # restored means indexed: the first queries must not wait for it
        return model

    # -- index ----------------------------------------------------------------------------
    def refresh(self) -> int:
        """Push every changed vector into the index now; returns points written (with
        ``background_writes``: the last part handed to the writer thread, after the previous
        write ends)."""
        self.flush()
        written = self._write_round(len(self._round))
        self.flush()
        self._take_round()
        return written + self._write_round(len(self._round))

    def maybe_refresh(self, now: float) -> int:
        """Begin a refresh when ``refresh_interval_s`` has passed on the caller's clock, and
        write the part of its rows due by ``now`` (``refresh_spread``). With
        ``background_writes`` a part waits while the previous one is being written."""
        interval = self.config.refresh_interval_s
        spread = self.config.refresh_spread * interval
        # Calls as far apart as the spread (clicks paused, a timer calling) leave no batches
        # to spread a refresh over: it is written at once.
        sparse = self._last_call is None or now - self._last_call >= spread
        self._last_call = now
        if self.writing:
            return 0
        written = 0
        if self._last_refresh is None or now - self._last_refresh >= interval:
            written = self._write_round(len(self._round))
            if self.writing:  # the rest of the last refresh is on the writer thread
                return written
            self._last_refresh = now
            self._take_round()
        elapsed = now - self._last_refresh
        due = len(self._round) if sparse or spread <= 0 or elapsed >= spread else \
            math.ceil(len(self._round) * elapsed / spread)
        return written + self._write_round(due)

    def _take_round(self) -> None:
        self._round, self._round_done = self.vectors.take_dirty(), 0
        self.rounds += 1

    @property
    def indexing(self) -> bool:
        """Whether rows the last refresh took are still to be written, or being written."""
        return self._round_done < len(self._round) or self.writing

    def _write_round(self, upto: int) -> int:
        """Write the taken rows up to ``upto`` (in line, or handed to the writer thread,
        once the write before it is done: one that failed is raised here)."""
        if self._pending is not None and self._pending.done():
            self.flush()
        rows = self._round[self._round_done : upto]
        self._round_done = max(self._round_done, upto)
        clicks = self.clicks_learned - self._clicks_at_refresh
        self._clicks_at_refresh = self.clicks_learned
        budget = self.config.index_writes_per_click
        limit = math.ceil(budget * max(clicks, 1)) if budget > 0 else None
        if len(rows) == 0 and limit is None:
            return 0
        if not self.config.background_writes or len(rows) > self.index.config.bulk_piece:
            # In line, and for a bulk write (a restore) in pieces: staging it all for the
            # writer thread would copy every vector at once.
            return self.index.refresh(self.keys, rows, limit)
        staged = self.index.stage(self.keys, rows, limit)
        if len(staged[0]) == 0:
            return self.index.write(*staged)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="index-writer")
        self._pending = self._writer.submit(self.index.write, *staged)
        return len(staged[0])

    @property
    def writing(self) -> bool:
        """Whether a background index write is still running (one that failed is raised by
        the next ``refresh`` or ``flush``, not by this question: metrics ask it too)."""
        return self._pending is not None and not self._pending.done()

    def flush(self) -> None:
        """Wait for the background index write, if any (before the index is saved or read
        as a whole); re-raises what it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def popular(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most clicked items (recent clicks weigh more), with their share."""
        n = len(self.vectors)
        pop = self.popularity[:n]
        k = min(k, n)
        if k <= len(self._top) or n <= len(self._top):
            top = self._top[:k]
        else:
            top = np.argpartition(-pop, k - 1)[:k]
            top = top[np.lexsort((top, -pop[top]))]
        total = float(pop.sum()) or 1.0
        ids = self.vectors.vocab.ids
        return [(ids[int(r)], float(pop[r] / total)) for r in top]

    # -- serving --------------------------------------------------------------------------
    def _session_rows(
        self, session_items: Sequence[str]
    ) -> tuple[list[int], list[float], dict[int, int]]:
        """The rows and recency weights of the items that make the session's query (latest
        first), and every known session item's recency rank."""
        cfg = self.config
        row_of = self.vectors.vocab.get
        counts = self.vectors.vocab.counts
        limit, decay, min_count = cfg.query_items, cfg.recency_decay, cfg.min_count
        rows: list[int] = []
        weights: list[float] = []
        seen: dict[int, int] = {}
        unknown: set[str] = set()
        w = 1.0
        for item in reversed(session_items):
            r = row_of(item)
            if r is None:
                if item in unknown:
                    continue
                unknown.add(item)
            else:
                if r in seen:  # one row per item: a repeat is the same name
                    continue
                seen[r] = len(seen) + len(unknown)  # distinct items after it
                if len(rows) < limit and counts[r] >= min_count:
                    rows.append(r)
                    weights.append(w)
            w *= decay
        return rows, weights, seen

    def _query_vectors(
        self, parts: list[tuple[list[int], list[float]]]
    ) -> tuple[FloatArray, FloatArray | None]:
        """Query vectors, input and output side, one row per session (each with >= 1 row):
        the recency-weighted means, every session in one gather, summed row after row as
        ``sum(axis=0)`` does for one session, so a batch gives the same floats."""
        vec = self.vectors
        lens = np.fromiter((len(r) for r, _ in parts), dtype=np.int64, count=len(parts))
        starts = np.zeros(len(parts), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        rows = np.fromiter((r for rs, _ in parts for r in rs), dtype=np.int64, count=int(lens.sum()))
        wts = np.fromiter((w for _, ws in parts for w in ws), dtype=np.float32, count=len(rows))
        q = self._weighted_means(vec.w_in, rows, wts, starts, lens)
        if not self.config.reverse_weight:
            return q, None
        return q, self._weighted_means(vec.w_out, rows, wts, starts,
                                       np.minimum(lens, max(1, self.config.reverse_items)))

    @staticmethod
    def _weighted_means(table: FloatArray, rows: IntArray, wts: FloatArray, starts: IntArray,
                        lens: IntArray) -> FloatArray:
        """Row ``i``: the weighted mean of ``table[rows[j]]`` over ``j`` in ``starts[i]`` +
        ``range(lens[i])`` (the same floats as numpy's expression for one session)."""
        if int(lens.max()) < 8:
            out: FloatArray = topk.weighted_means(table, rows, wts, starts, lens)
            return out
        return np.stack([(wts[s : s + n, None] * table[rows[s : s + n]]).sum(axis=0)
                         / np.float32(wts[s : s + n].sum()) for s, n in zip(starts, lens, strict=True)])

    def score(
        self, q: FloatArray, rows: IntArray, seen: dict[int, int], q_out: FloatArray | None = None
    ) -> FloatArray:
        """Exact scores of ``rows`` against the current vectors and counts: the reference, in
        numpy, for what ``recommend`` ranks by (``topk.rank`` computes the same per batch)."""
        cfg = self.config
        vec = self.vectors
        scores: FloatArray = vec.w_out[rows] @ q
        if cfg.reverse_weight and q_out is not None:
            scores += np.float32(cfg.reverse_weight) * (vec.w_in[rows] @ q_out)
        if cfg.popularity_weight:
            scores += np.float32(cfg.popularity_weight) * np.log1p(vec.vocab.counts[rows]).astype(np.float32)
        if cfg.seen_boost and seen and len(rows):
            pos = np.flatnonzero(np.isin(rows, np.fromiter(seen.keys(), dtype=np.int64, count=len(seen))))
            ranks = np.asarray([seen[r] for r in rows[pos].tolist()], dtype=np.int64)
            if pos.size:
                boost = cfg.seen_boost * np.float64(cfg.seen_decay) ** ranks
                scores[pos] += boost.astype(np.float32)
        return scores

    def recommend(self, session_items: Sequence[str], k: int) -> Recommendation:
        """Top ``k`` next items for a session whose clicks so far are ``session_items``."""
        return self.recommend_many([session_items], k)[0]

    def recommend_many(self, sessions: Sequence[Sequence[str]], k: int) -> list[Recommendation]:
        """``recommend`` for each session, all against the same model state: the query
        vectors are built together and the index is asked once for the whole batch, which
        is where a single recommendation spends most of its time (per-call overhead)."""
        cfg = self.config
        vec = self.vectors
        version = vec.version
        parsed = [self._session_rows(s) for s in sessions]
        known = [i for i, (rows, _, _) in enumerate(parsed) if rows]
        out: list[Recommendation | None] = [None] * len(sessions)
        if known:
            q, q_out = self._query_vectors([(parsed[i][0], parsed[i][1]) for i in known])
            pop_col = np.full((len(known), 1), cfg.popularity_weight, dtype=np.float32)
            # No exact fallback while a write holds the index: the writer holds it for one
            # chunk at a time, and exact search over a large catalogue costs more than that.
            labels, _, _ = self.index.query_batch(np.concatenate([q, pop_col], axis=1), cfg.candidates)
            ranked = self._rank_many(sessions, parsed, known, labels, q, q_out, k)
            for j, one in zip(known, ranked, strict=True):
                out[j] = one
        for i, rec in enumerate(out):
            if rec is None:
                exclude = set(sessions[i]) if cfg.exclude_seen else set()
                out[i] = Recommendation(self._fill([], k, exclude), "fallback", version)
        return [r for r in out if r is not None]

    def _rank_many(self, sessions: Sequence[Sequence[str]],
                   parsed: list[tuple[list[int], list[float], dict[int, int]]], known: list[int],
                   labels: IntArray, q: FloatArray, q_out: FloatArray | None, k: int
                   ) -> list[Recommendation]:
        """The lists of the ``known`` sessions: each one's index candidates (``labels``, rows
        from ``VectorIndex.query_batch``: -1 where it found fewer) plus its own items,
        re-scored exactly, in one compiled call for the batch (``topk.rank``)."""
        cfg = self.config
        vec = self.vectors
        nq = len(known)
        seens = [parsed[i][2] for i in known]
        seen_start = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum([len(s) for s in seens], out=seen_start[1:])
        total = int(seen_start[-1])
        seen_rows = np.fromiter(chain.from_iterable(seens), dtype=np.int64, count=total)
        ranks = np.fromiter(chain.from_iterable(s.values() for s in seens), dtype=np.int64, count=total)
        boost = (cfg.seen_boost * np.float64(cfg.seen_decay) ** ranks).astype(np.float32)
        rows = np.empty((nq, k), dtype=np.int64)
        scores = np.empty((nq, k), dtype=np.float32)
        got = np.empty(nq, dtype=np.int64)
        topk.rank(vec.w_in, vec.w_out, vec.vocab.counts, q, q if q_out is None else q_out,
                  cfg.reverse_weight if q_out is not None else 0.0, cfg.popularity_weight, labels,
                  seen_rows, boost, seen_start, cfg.exclude_seen, rows, scores, got)
        name = vec.vocab.ids.__getitem__
        version = vec.version
        out: list[Recommendation] = []
        # Whole arrays to lists at once, and the lists built by map/zip: per element, numpy
        # scalars and a comprehension cost several times more (20 pairs a click).
        for i, n, r, sc in zip(known, got.tolist(), rows.tolist(), scores.tolist(), strict=True):
            exclude = set(sessions[i]) if cfg.exclude_seen else set()
            if n < 0:  # no candidate at all
                out.append(Recommendation(self._fill([], k, exclude), "fallback", version))
                continue
            ranked = list(zip(map(name, r[:n]), sc[:n], strict=True))
            out.append(Recommendation(self._fill(ranked, k, exclude), "model", version))
        return out

    def _fill(
        self, ranked: list[tuple[str, float]], k: int, exclude: set[str]
    ) -> list[tuple[str, float]]:
        """Top up with popular items so the widget always gets ``k`` when the model knows that many."""
        if len(ranked) >= k:
            return ranked
        have = {i for i, _ in ranked} | exclude
        # Fillers rank below every model item: base - 1 + share, share in (0, 1], decreasing.
        base = ranked[-1][1] - 1.0 if ranked else 0.0
        for item, share in self.popular(k + len(have)):
            if len(ranked) >= k:
                break
            if item not in have:
                ranked.append((item, base + share))
                have.add(item)
        return ranked



def warm_up(config: RecommenderConfig | None = None, items: int = 64, k: int = 20) -> float:
    """Call every compiled kernel of the click path once, on throwaway models with
    ``config``'s settings; returns the seconds it took.

    numba compiles a kernel, or loads it from its on-disk cache, on its first call (about
    0.7 s for the learner alone). A worker that skipped this would make the clicks that
    reach it first after a start, a restart or a rollout wait for it. Two models, so both
    ways a band answers run: by exact products while it is small, by a graph walk after."""
    t0 = time.perf_counter()
    base = config or RecommenderConfig()
    ids = [f"warm-up-{i}" for i in range(items)]
    for exact_below in (base.index.exact_below, 0):
        model = Recommender(replace(base, background_writes=False,
                                    index=replace(base.index, exact_below=exact_below)))
        for i, item in enumerate(ids):
            model.learn(item, ids[max(0, i - 2) : i])
        model.refresh()
        model.recommend(ids[:3], k)
        model.recommend_many([ids[:2], ids[5:9], ["not-an-item"]], k)
        if model.vectors.config.shared:  # a worker that shares calls it once a second
            model.share(0.01, 1)
    return time.perf_counter() - t0
