"""Online quality as the worker serves: was the visitor's next click in the list we showed?

Pure bookkeeping (no Kafka, no metrics): the worker calls ``served`` after publishing a list
and ``clicked`` when the same visitor's next click arrives in the same session; the handler
copies the rolling values into the Prometheus gauges. A river ADWIN detector watches the
hit stream (hit = the next click was in the top ``max(ks)``) for shifts, so a quality drop
is noticed without a fixed threshold.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from river.drift import ADWIN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drift:
    """A shift ADWIN found: the hit rate of the older part of its window it dropped, and of
    the recent part it kept (so ``after - before`` is how large the shift was)."""

    at_event: int
    """Judged lists so far when it was detected (1-based)."""
    before: float
    after: float
    dropped: int
    """Judgements ADWIN dropped as belonging to the old regime."""


class OnlineQuality:
    """Rolling HR@k and MRR@k over the last ``window`` judged lists, plus drift detection.

    A served list is judged once, by the visitor's next click in the same session; a list
    followed by no click (the session ended) is never judged, because there is nothing to
    compare it with.
    """

    def __init__(self, ks: tuple[int, ...] = (10, 20), window: int = 1000,
                 adwin_delta: float = 0.002) -> None:
        self.ks = ks
        self.window = window
        self._ranks: deque[int | None] = deque(maxlen=window)
        self._hits = dict.fromkeys(ks, 0)
        self._rr = dict.fromkeys(ks, 0.0)
        """Per k, over the window: lists whose top k held the click, and the sum of 1/rank.
        Kept as the window moves (the gauges are set on every click), summed again from the
        window once per ``window`` judgements so float error cannot build up."""
        self._last: dict[str, tuple[str, list[str]]] = {}
        # Imported here, not at the top: ``river.drift``'s package import loads scipy.stats
        # (for KSWIN, which we do not use): 64 MiB of RSS and 0.7 s, which every process that
        # imports the metrics module (the core benchmark, the CLI's tools) paid without ever
        # judging a list. The worker still pays it when it builds its monitor.
        from river.drift import ADWIN

        self._adwin: ADWIN = ADWIN(delta=adwin_delta)
        self.judged = 0
        """Lists judged since start (the ``sessionrec_online_judged_total`` counter)."""
        self.drifts: list[Drift] = []
        self.last_judged = False
        """Whether the latest ``clicked`` judged a list (a miss returns None as well)."""

    def served(self, visitor_id: str, session_id: str, items: list[str]) -> None:
        """Remember the list just shown; the visitor's next click will judge it."""
        self._last[visitor_id] = (session_id, items)

    def clicked(self, visitor_id: str, session_id: str, item_id: str) -> int | None:
        """Judge the list last served to this visitor in this session; returns the 1-based
        rank of ``item_id`` in it (None if absent or nothing was served in this session)."""
        last = self._last.pop(visitor_id, None)
        self.last_judged = last is not None and last[0] == session_id
        if last is None or last[0] != session_id:
            return None
        items = last[1]
        rank = items.index(item_id) + 1 if item_id in items else None
        self._window_add(rank)
        self.judged += 1
        k = max(self.ks)
        hit = 1.0 if rank is not None and rank <= k else 0.0
        n0, mean0 = self._adwin.width, self._adwin.estimation
        self._adwin.update(hit)
        if self._adwin.drift_detected:
            n1, mean1 = self._adwin.width, self._adwin.estimation
            dropped = int(n0 + 1 - n1)
            old = (mean0 * n0 + hit - mean1 * n1) / dropped if dropped > 0 else mean0
            d = Drift(self.judged, old, mean1, dropped)
            self.drifts.append(d)
            log.warning("online quality shift detected after %d judged lists: HR@%d %.3f -> "
                        "%.3f (%+.3f; older %d judgements dropped, %d kept)", d.at_event, k,
                        d.before, d.after, d.after - d.before, dropped, int(n1))
        return rank

    def _window_add(self, rank: int | None) -> None:
        if len(self._ranks) == self.window:
            self._count(self._ranks[0], -1)
        self._ranks.append(rank)
        self._count(rank, 1)
        if self.judged % self.window == 0:
            self._hits, self._rr = dict.fromkeys(self.ks, 0), dict.fromkeys(self.ks, 0.0)
            for r in self._ranks:
                self._count(r, 1)

    def _count(self, rank: int | None, sign: int) -> None:
        if rank is None:
            return
        for k in self.ks:
            if rank <= k:
                self._hits[k] += sign
                self._rr[k] += sign / rank

    def forget(self, visitor_id: str) -> None:
        """The visitor's session closed: its last list can no longer be judged."""
        self._last.pop(visitor_id, None)

    @property
    def window_size(self) -> int:
        """Judgements currently in the rolling window."""
        return len(self._ranks)

    def hit_rate(self, k: int) -> float:
        """Share of judged lists in the window whose top ``k`` held the next click."""
        if not self._ranks:
            return 0.0
        return self._hits[k] / len(self._ranks)

    def mrr(self, k: int) -> float:
        """Mean of 1/rank over judged lists in the window (0 when the click was not in the
        top ``k``)."""
        if not self._ranks:
            return 0.0
        return max(0.0, self._rr[k]) / len(self._ranks)
