"""The serving model: item vectors + HNSW index + popularity, behind two verbs.

``learn(item_id, context)`` trains on one accepted click; ``recommend(session_items, k)``
answers "what next?" for a live session. The worker and the offline replay (``evaluate``)
call exactly these, so offline quality is the quality the worker serves.

Ranking: the session query is a recency-weighted sum of the *input* vectors of its latest
items; HNSW returns candidates by inner product against *output* vectors (the direction
SGNS trained: earlier item -> later item); candidates are re-scored exactly against the
current vectors, and the session's own items may get a re-click bonus. When none of the
session's items has a trained vector, the answer is the popularity list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from models.index import IndexConfig, VectorIndex
from models.item2vec import Item2VecConfig, ItemVectors

Source = Literal["model", "fallback"]


@dataclass(frozen=True)
class RecommenderConfig:
    """Ranking settings (constructor arguments are the settings)."""

    item2vec: Item2VecConfig = field(default_factory=Item2VecConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    refresh_interval_s: float = 0.5
    """The index takes new and changed vectors at least this often (clock of the caller)."""
    candidates: int = 100
    query_items: int = 5
    recency_decay: float = 0.7
    exclude_seen: bool = False
    seen_boost: float = 0.0
    """Added to the score of items already in the session (a re-click is often next)."""
    min_count: int = 1
    """An item needs this many clicks before its vector is trusted for a query."""
    popularity_half_life_clicks: float = 100_000.0


@dataclass(frozen=True)
class Recommendation:
    items: list[tuple[str, float]]
    source: Source
    model_version: int


class Recommender:
    """Learns from clicks and recommends next items for a session."""

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.vectors = ItemVectors(self.config.item2vec)
        self.index = VectorIndex(self.config.item2vec.dim, self.config.index)
        self.popularity = np.zeros(1024, dtype=np.float64)
        self._pop_scale = 1.0
        self._pop_growth = 2.0 ** (1.0 / self.config.popularity_half_life_clicks)
        self._popular: list[tuple[str, float]] = []
        self._popular_stale = True
        self._last_refresh: float | None = None
        self.clicks_learned = 0

    # -- learning -------------------------------------------------------------------------
    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> float:
        """Learn from one accepted click: vectors, and the popularity the fallback uses."""
        loss = self.vectors.learn(item_id, context)
        row = self.vectors.row(item_id)
        assert row is not None
        if row >= len(self.popularity):
            grown = np.zeros(max(len(self.popularity) * 2, row + 1), dtype=np.float64)
            grown[: len(self.popularity)] = self.popularity
            self.popularity = grown
        # Exponentially decayed counts without touching every item: grow the increment instead.
        self._pop_scale *= self._pop_growth
        if self._pop_scale > 1e100:
            self.popularity /= self._pop_scale
            self._pop_scale = 1.0
        self.popularity[row] += self._pop_scale
        self._popular_stale = True
        self.clicks_learned += 1
        return loss

    # -- index ----------------------------------------------------------------------------
    def refresh(self) -> int:
        """Push changed vectors into the index now; returns points written."""
        written = self.index.refresh(self.vectors.w_out, self.vectors.take_dirty())
        self._update_popular()
        return written

    def maybe_refresh(self, now: float) -> int:
        """Refresh when ``refresh_interval_s`` has passed on the caller's clock."""
        if self._last_refresh is None or now - self._last_refresh >= self.config.refresh_interval_s:
            self._last_refresh = now
            return self.refresh()
        return 0

    def _update_popular(self) -> None:
        if not self._popular_stale:
            return
        n = len(self.vectors)
        k = min(200, n)
        if k == 0:
            self._popular = []
            return
        pop = self.popularity[:n]
        top = np.argpartition(-pop, k - 1)[:k]
        top = top[np.lexsort((top, -pop[top]))]
        total = float(pop.sum()) or 1.0
        ids = self.vectors.item_ids(top)
        self._popular = [(ids[i], float(pop[r] / total)) for i, r in enumerate(top)]
        self._popular_stale = False

    def popular(self, k: int) -> list[tuple[str, float]]:
        if self._popular_stale and len(self._popular) < k:
            self._update_popular()
        return self._popular[:k]

    # -- serving --------------------------------------------------------------------------
    def recommend(self, session_items: list[str] | tuple[str, ...], k: int) -> Recommendation:
        """Top ``k`` next items for a session whose clicks so far are ``session_items``."""
        cfg = self.config
        vec = self.vectors
        version = vec.version
        rows: list[int] = []
        weights: list[float] = []
        w = 1.0
        seen: set[str] = set()
        for item in reversed(session_items):
            if len(rows) >= cfg.query_items:
                break
            if item in seen:
                continue
            seen.add(item)
            r = vec.row(item)
            if r is not None and vec.vocab.counts[r] >= cfg.min_count:
                rows.append(r)
                weights.append(w)
            w *= cfg.recency_decay
        exclude = set(session_items) if cfg.exclude_seen else set()
        if not rows:
            return Recommendation(self._fill([], k, exclude), "fallback", version)
        q = (np.asarray(weights, dtype=np.float32)[:, None] * vec.w_in[rows]).sum(axis=0)
        n_items = len(vec)
        labels, _ = self.index.query(q, cfg.candidates, fallback=vec.w_out[:n_items])
        cand = set(labels.tolist())
        if cfg.seen_boost or not cfg.exclude_seen:
            for item in set(session_items):
                r = vec.row(item)
                if r is not None:
                    cand.add(r)
        if not cand:
            return Recommendation(self._fill([], k, exclude), "fallback", version)
        cand_rows = np.fromiter(sorted(cand), dtype=np.int64)
        scores = vec.w_out[cand_rows] @ q
        if cfg.seen_boost:
            session_set = set(session_items)
            ids_all = vec.item_ids(cand_rows)
            boost = np.fromiter((cfg.seen_boost if i in session_set else 0.0 for i in ids_all),
                                dtype=np.float32, count=len(ids_all))
            scores = scores + boost
        order = np.lexsort((cand_rows, -scores))
        ranked: list[tuple[str, float]] = []
        for j in order:
            item = vec.vocab.ids[int(cand_rows[j])]
            if item in exclude:
                continue
            ranked.append((item, float(scores[j])))
            if len(ranked) >= k:
                break
        return Recommendation(self._fill(ranked, k, exclude), "model", version)

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
