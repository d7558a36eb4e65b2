"""Simple reference recommenders, with the same two verbs as the model.

They are what every evaluation report shows beside the model: if the model cannot beat
"most clicked" and "what usually follows this item", something is wrong.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from heapq import nlargest
from typing import Any

import numpy as np


class Popularity:
    """Most clicked items so far.

    The top list is kept up to date click by click: counts only grow, so only the clicked
    item can move, and it can only move up (re-ranking everything per click dominated the
    whole offline replay).
    """

    name = "pop"
    keep = 100

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._top: list[tuple[int, str]] = []
        """(count, item) of the ``keep`` best by (count, item), best first."""
        self._in_top: set[str] = set()

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> None:
        c = self.counts[item_id] + 1
        self.counts[item_id] = c
        top = self._top
        if item_id in self._in_top:
            top[:] = [(c, i) if i == item_id else (n, i) for n, i in top]
        elif len(top) < self.keep:
            top.append((c, item_id))
            self._in_top.add(item_id)
        elif (c, item_id) > top[-1]:
            self._in_top.discard(top[-1][1])
            top[-1] = (c, item_id)
            self._in_top.add(item_id)
        else:
            return
        top.sort(reverse=True)

    def recommend(self, session_items: list[str] | tuple[str, ...], k: int) -> list[tuple[str, float]]:
        if k > len(self._top) and len(self.counts) > len(self._top):
            best = nlargest(k, self.counts.items(), key=lambda t: (t[1], t[0]))
            return [(i, float(c)) for i, c in best]
        return [(i, float(c)) for c, i in self._top[:k]]


class SequentialRules:
    """Sequential rules (Ludewig & Jannach 2018): item a -> item b when b follows a within
    ``steps`` clicks, weighted 1/distance. ``steps=1`` is a first-order Markov chain."""

    def __init__(self, steps: int = 8, name: str = "sr") -> None:
        self.steps = steps
        self.name = name
        self.rules: defaultdict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.fallback = Popularity()

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> None:
        self.fallback.learn(item_id, context)
        for dist, prev in enumerate(reversed(context[-self.steps :]), start=1):
            self.rules[prev][item_id] += 1.0 / dist

    def recommend(self, session_items: list[str] | tuple[str, ...], k: int) -> list[tuple[str, float]]:
        if not session_items or session_items[-1] not in self.rules:
            return self.fallback.recommend(session_items, k)
        follow = self.rules[session_items[-1]]
        top = nlargest(k, follow.items(), key=lambda t: (t[1], t[0]))
        return [(i, float(s)) for i, s in top]


class GensimItem2Vec:
    """The offline reference: gensim's Word2Vec (skip-gram, negative sampling) trained for many
    epochs on the training sessions, served with the classic item2vec recipe: the items most
    cosine-similar to the recency-weighted mean of the session's latest (unit) item vectors.

    It is trained once, before the replay, and never learns afterwards (``learn`` only feeds
    the popularity fallback for sessions whose items it has never seen). gensim is imported
    here, lazily: it is an optional dependency (the ``[bench]`` extra).
    """

    def __init__(
        self,
        sessions: Iterable[Sequence[str]],
        epochs: int,
        dim: int = 64,
        window: int = 5,
        negatives: int = 5,
        seed: int = 0,
        query_items: int = 5,
        recency_decay: float = 0.7,
        name: str = "gensim",
    ) -> None:
        try:
            from gensim.models import Word2Vec
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("the gensim baseline needs gensim: pip install -e '.[bench]'") from exc
        self.name = name
        self.query_items = query_items
        self.recency_decay = recency_decay
        self.fallback = Popularity()
        corpus = [list(s) for s in sessions if s]
        model: Any = Word2Vec(
            corpus, vector_size=dim, window=window, negative=negatives, sg=1, hs=0,
            min_count=1, workers=1, seed=seed, epochs=epochs,
        )
        self.wv: Any = model.wv
        self._unit = self.wv.get_normed_vectors()

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> None:
        self.fallback.learn(item_id, context)

    def recommend(self, session_items: list[str] | tuple[str, ...], k: int) -> list[tuple[str, float]]:
        rows: list[int] = []
        weights: list[float] = []
        w = 1.0
        seen: set[str] = set()
        for item in reversed(session_items):
            if item in seen:
                continue
            seen.add(item)
            r = self.wv.key_to_index.get(item)
            if r is not None:
                rows.append(r)
                weights.append(w)
                if len(rows) >= self.query_items:
                    break
            w *= self.recency_decay
        if not rows:
            return self.fallback.recommend(session_items, k)
        wts = np.asarray(weights, dtype=np.float32)
        q = (wts[:, None] * self._unit[rows]).sum(axis=0)
        q /= np.linalg.norm(q) or 1.0
        sims = self._unit @ q
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.lexsort((top, -sims[top]))]
        keys = self.wv.index_to_key
        return [(keys[int(r)], float(sims[r])) for r in top]


def sessions_of(rows: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Item sequences per session from (session_id, item_id) pairs already in time order."""
    by_session: dict[str, list[str]] = {}
    for sid, item in rows:
        by_session.setdefault(sid, []).append(item)
    return list(by_session.values())


def reference_baselines() -> list[Popularity | SequentialRules]:
    return [Popularity(), SequentialRules(1, "markov"), SequentialRules(8, "sr")]
