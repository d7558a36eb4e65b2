"""Simple reference recommenders, with the same two verbs as the model.

They are what every evaluation report shows beside the model: if the model cannot beat
"most clicked" and "what usually follows this item", something is wrong.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from heapq import nlargest


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


def reference_baselines() -> list[Popularity | SequentialRules]:
    return [Popularity(), SequentialRules(1, "markov"), SequentialRules(8, "sr")]
