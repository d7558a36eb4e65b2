"""Simple reference recommenders, with the same two verbs as the model.

They are what every evaluation report shows beside the model: if the model cannot beat
"most clicked" and "what usually follows this item", something is wrong.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from heapq import nlargest


class Popularity:
    """Most clicked items so far."""

    name = "pop"

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._top: list[tuple[str, float]] = []
        self._dirty = True

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> None:
        self.counts[item_id] += 1
        self._dirty = True

    def recommend(self, session_items: list[str] | tuple[str, ...], k: int) -> list[tuple[str, float]]:
        if self._dirty or len(self._top) < k:
            self._top = [(i, float(c)) for i, c in nlargest(max(k, 100), self.counts.items(),
                                                           key=lambda t: (t[1], t[0]))]
            self._dirty = False
        return self._top[:k]


class SequentialRules:
    """Sequential rules (Ludewig & Jannach 2018): item a -> item b when b follows a within
    ``steps`` clicks, weighted 1/distance. ``steps=1`` is a first-order Markov chain."""

    def __init__(self, steps: int = 8, name: str = "sr") -> None:
        self.steps = steps
        self.name = name
        self.rules: defaultdict[str, Counter[str]] = defaultdict(Counter)
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


def reference_baselines() -> list[Popularity | SequentialRules]:
    return [Popularity(), SequentialRules(1, "markov"), SequentialRules(8, "sr")]
