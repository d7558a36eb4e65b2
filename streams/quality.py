"""Online quality as the worker serves: was the visitor's next click in the list we showed?

Pure bookkeeping (no Kafka): the worker calls ``served`` after publishing a list and
``clicked`` when the same visitor's next click arrives in the same session. A river ADWIN
detector watches the hit stream for shifts.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from river.drift import ADWIN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drift:
    at_event: int
    before: float
    after: float


class OnlineQuality:
    """Rolling HR@k and MRR@k over the last ``window`` judged lists, plus drift detection."""

    def __init__(self, ks: tuple[int, ...] = (10, 20), window: int = 1000,
                 adwin_delta: float = 0.002) -> None:
        self.ks = ks
        self._ranks: deque[int | None] = deque(maxlen=window)
        self._last: dict[str, tuple[str, list[str]]] = {}
        self._adwin = ADWIN(delta=adwin_delta)
        self.judged = 0
        self.drifts: list[Drift] = []

    def served(self, visitor_id: str, session_id: str, items: list[str]) -> None:
        self._last[visitor_id] = (session_id, items)

    def clicked(self, visitor_id: str, session_id: str, item_id: str) -> int | None:
        """Judge the list last served to this visitor in this session; returns the 1-based
        rank of ``item_id`` in it (None if absent or nothing was served in this session)."""
        last = self._last.get(visitor_id)
        if last is None or last[0] != session_id:
            return None
        items = last[1]
        rank = items.index(item_id) + 1 if item_id in items else None
        self._ranks.append(rank)
        self.judged += 1
        hit = 1.0 if rank is not None and rank <= max(self.ks) else 0.0
        before = self._adwin.estimation
        self._adwin.update(hit)
        if self._adwin.drift_detected:
            d = Drift(self.judged, before, self._adwin.estimation)
            self.drifts.append(d)
            log.warning("online quality shift after %d judged lists: HR@%d %.3f -> %.3f",
                        d.at_event, max(self.ks), d.before, d.after)
        return rank

    def forget(self, visitor_id: str) -> None:
        self._last.pop(visitor_id, None)

    def hit_rate(self, k: int) -> float:
        if not self._ranks:
            return 0.0
        return sum(1 for r in self._ranks if r is not None and r <= k) / len(self._ranks)

    def mrr(self, k: int) -> float:
        if not self._ranks:
            return 0.0
        return sum(1.0 / r for r in self._ranks if r is not None and r <= k) / len(self._ranks)
