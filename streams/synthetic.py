"""A synthetic clickstream that looks like e-commerce sessions, for demos, tests and benchmarks.

Items have Zipf popularity and live in topical groups; a session stays near one group
(browsing similar products, sometimes going back to one already seen); each visitor has
several sessions separated by more than the session gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticClick:
    visitor_id: str
    item_id: str
    ts: float
    event_id: str


ZIPF = 1.1
"""Item ``i{k}`` is clicked about (k + 1) ** -ZIPF as often as ``i0``."""


def synthetic_stream(
    clicks: int,
    items: int = 5000,
    visitors: int | None = None,
    groups: int | None = None,
    start_ts: float = 1.7e9,
    gap_s: float = 1800.0,
    seed: int = 0,
    zipf: float = ZIPF,
) -> Iterator[SyntheticClick]:
    """Yield ``clicks`` clicks in event-time order.

    Visitors run interleaved sessions of 2-20 clicks about 30 s apart; after a session a
    visitor pauses for 1.5-3 gaps before the next one.
    """
    rng = np.random.default_rng(seed)
    n_groups = groups or max(1, items // 50)
    n_visitors = visitors or max(10, clicks // 20)
    ranks = np.arange(1, items + 1, dtype=np.float64)
    pop = ranks**-zipf
    group_of = rng.integers(0, n_groups, size=items)
    members = [np.flatnonzero(group_of == g) for g in range(n_groups)]
    members = [mm if mm.size else np.array([g % items]) for g, mm in enumerate(members)]
    member_cum = [np.cumsum(pop[mm]) / pop[mm].sum() for mm in members]
    global_cum = np.cumsum(pop) / pop.sum()
    # Each visitor: next event time, clicks left in the current session, current group.
    next_ts = start_ts + rng.random(n_visitors) * 600.0
    left = rng.integers(2, 21, size=n_visitors)
    group = rng.integers(0, n_groups, size=n_visitors)
    history: list[list[int]] = [[] for _ in range(n_visitors)]
    sessions = np.zeros(n_visitors, dtype=np.int64)
    for n in range(clicks):
        v = int(np.argmin(next_ts))
        ts = float(next_ts[v])
        h = history[v]
        r = rng.random()
        if h and r < 0.15:
            item = h[int(rng.integers(0, len(h)))]
        elif r < 0.9:
            g = int(group[v])
            j = int(np.searchsorted(member_cum[g], rng.random()))
            item = int(members[g][min(j, len(members[g]) - 1)])
        else:
            item = min(int(np.searchsorted(global_cum, rng.random())), items - 1)
            group[v] = group_of[item]
        h.append(item)
        left[v] -= 1
        if left[v] <= 0:
            next_ts[v] = ts + gap_s * (1.5 + 1.5 * rng.random())
            left[v] = rng.integers(2, 21)
            group[v] = rng.integers(0, n_groups)
            history[v] = []
            sessions[v] += 1
        else:
            next_ts[v] = ts + 5.0 + 50.0 * rng.random()
        yield SyntheticClick(f"v{v}", f"i{item}", round(ts, 3), f"s{seed}-{n}")
