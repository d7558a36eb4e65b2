"""An HNSW index (hnswlib) over item vectors that keeps up with a model learning online.

Concurrency rule (hnswlib's own: ``add_items``/``resize_index`` must never overlap
``knn_query`` on the same index): every hnswlib call on the live ``self._hnsw`` happens while
holding ``self._lock``. Writers (``write``/``refresh``) may run on one background thread; a
query that finds the lock taken does not wait for a write or a resize to finish: it answers
by exact search over the caller's current vectors instead (``query(..., fallback=...)``). So
the index grows without blocking queries, and no query ever runs concurrently with a write.

Vectors change on every click, but writing a point costs far more than a query, so
``refresh`` writes only the rows that moved by more than ``drift_tol`` (relative L2) since
they were last indexed, plus every new row. Candidates are re-scored against the current
vectors by the caller, so small drifts cost nothing in ranking quality.

A changed vector is written as a *new* hnswlib element and the old element is marked
deleted, instead of updated in place: hnswlib's in-place update repairs the neighbourhood of
the point and measured 15-20x slower than an insertion. Deleted elements stay in the graph
as routing nodes; once they outnumber ``compact_ratio`` times the live ones, the graph is
rebuilt from the indexed vectors on the writer's thread, off the lock, and swapped in.

Inner-product search (``mips``, the default) runs as L2 search over vectors lifted to a
common norm, which HNSW handles far better than raw inner products (see ``_lift``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import hnswlib
import numpy as np
import numpy.typing as npt

from models.sgns import FloatArray, IntArray


@dataclass(frozen=True)
class IndexConfig:
    space: str = "mips"
    """``ip`` (hnswlib's inner product, what the scorer ranks by), ``mips`` (inner product
    searched as L2 over vectors lifted to one norm) or ``cosine``."""
    m: int = 16
    ef_construction: int = 40
    ef: int = 100
    drift_tol: float = 0.05
    compact_ratio: float = 1.0
    """Rebuild the graph when deleted elements exceed this many times the live ones."""
    seed: int = 0
    initial_capacity: int = 1024


class _Graph:
    """One hnswlib graph with its label <-> row maps (labels are never reused)."""

    def __init__(self, dim: int, config: IndexConfig, capacity: int) -> None:
        # Inner product is searched as L2 over lifted vectors (see ``VectorIndex._lift``).
        lifted = config.space == "mips"
        self.hnsw = hnswlib.Index(space="l2" if lifted else config.space, dim=dim + lifted)
        self.hnsw.init_index(
            max_elements=capacity,
            ef_construction=config.ef_construction,
            M=config.m,
            random_seed=config.seed,
        )
        self.hnsw.set_ef(config.ef)
        self.hnsw.set_num_threads(1)
        self.row_of_label = np.full(capacity, -1, dtype=np.int64)
        self.next_label = 0
        self.deleted = 0

    def add(self, rows: IntArray, vecs: FloatArray) -> IntArray:
        """Insert ``vecs`` as new elements for ``rows``; returns their labels."""
        n = len(rows)
        need = self.next_label + n
        cap = len(self.row_of_label)
        if need > cap:
            while cap < need:
                cap *= 2
            self.hnsw.resize_index(cap)
            grown = np.full(cap, -1, dtype=np.int64)
            grown[: len(self.row_of_label)] = self.row_of_label
            self.row_of_label = grown
        labels = np.arange(self.next_label, need, dtype=np.int64)
        self.hnsw.add_items(vecs, labels, num_threads=1)
        self.row_of_label[labels] = rows
        self.next_label = need
        return labels

    def delete(self, labels: IntArray) -> None:
        for lab in labels.tolist():
            self.hnsw.mark_deleted(lab)
        self.row_of_label[labels] = -1
        self.deleted += len(labels)


class VectorIndex:
    """Approximate top-k over a growing, changing table of vectors."""

    radius_growth = 1.2

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self.dim = dim
        self._lock = threading.Lock()
        cap = self.config.initial_capacity
        self._graph = _Graph(dim, self.config, cap)
        self._radius = 0.0
        """Every lifted vector has this norm (``mips``); grows when outgrown, with a rebuild."""
        self._indexed: FloatArray = np.zeros((cap, dim), dtype=np.float32)
        self._label = np.full(cap, -1, dtype=np.int64)
        """Row -> its live hnswlib label (-1: not indexed)."""
        self._count = 0
        self._drift = np.zeros(cap, dtype=np.float64)
        """Row -> relative drift when last changed, for drifted rows not yet rewritten (else 0)."""
        self.inserts = 0
        """Points written to hnswlib so far (new or re-inserted)."""
        self.rebuilds = 0
        self.busy_fallbacks = 0
        """Queries answered by exact search because a write held the index."""
        self.last_refresh_s = 0.0
        self.last_refresh_at = 0.0

    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return int(self._indexed.shape[0])

    def nbytes(self) -> int:
        """Memory the index holds: the hnswlib graph (its serialised size, which is what it
        allocates per element, at its current capacity) and the per-row arrays."""
        g = self._graph
        with self._lock:
            graph = int(g.hnsw.index_file_size())
            per_cap = graph // max(1, g.hnsw.get_current_count()) * (g.hnsw.get_max_elements()
                                                                  - g.hnsw.get_current_count())
        return (graph + per_cap + g.row_of_label.nbytes + self._indexed.nbytes + self._label.nbytes
                + self._drift.nbytes)

    def _ensure_rows(self, need: int) -> None:
        """Grow the per-row arrays by doubling (writer only; queries read them under the lock)."""
        cap = self.capacity
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        grown = np.zeros((cap, self.dim), dtype=np.float32)
        grown[: self.capacity] = self._indexed
        label = np.full(cap, -1, dtype=np.int64)
        label[: len(self._label)] = self._label
        drift = np.zeros(cap, dtype=np.float64)
        drift[: len(self._drift)] = self._drift
        self._indexed, self._label, self._drift = grown, label, drift

    def select_stale(
        self, table: FloatArray, rows: list[int] | IntArray, limit: int | None = None
    ) -> IntArray:
        """Which rows must be (re)written: new ones among ``rows``, and those that drifted.

        Rows whose vector is still all zeros are left out: they cannot rank anything yet.
        With ``limit``, every new row is taken but drifted ones only up to ``limit`` in all,
        largest relative drift first; the others stay pending with the drift measured when
        they were last changed, and compete again on the next call without being re-read,
        so a burst of changes is spread over a few refreshes at a bounded cost per call.
        """
        r = np.asarray(rows, dtype=np.int64)
        self._ensure_rows(int(r.max()) + 1 if r.size else 0)
        new = np.zeros(0, dtype=np.int64)
        if r.size:
            cur = table[r]
            norm = np.linalg.norm(cur, axis=1)
            present = self._label[r] >= 0
            old = self._indexed[r]
            drift = np.linalg.norm(cur - old, axis=1) / (np.linalg.norm(old, axis=1) + 1e-6)
            new = r[(norm > 0) & ~present]
            self._drift[r] = np.where(present & (drift > self.config.drift_tol), drift, 0.0)
        moved = np.flatnonzero(self._drift > 0)
        room = len(moved) if limit is None else max(limit - len(new), 0)
        if len(moved) > room:
            moved = moved[np.lexsort((moved, -self._drift[moved]))[:room]]
        self._drift[moved] = 0.0
        out: IntArray = np.concatenate([new, moved]).astype(np.int64)
        return out

    def stage(
        self, table: FloatArray, rows: list[int] | IntArray, limit: int | None = None
    ) -> tuple[IntArray, FloatArray]:
        """Pick the stale ``rows`` and copy their vectors (on the thread that owns ``table``)."""
        stale = self.select_stale(table, rows, limit)
        return stale, np.ascontiguousarray(table[stale], dtype=np.float32)

    def write(self, labels: IntArray, vecs: FloatArray) -> int:
        """Insert or replace staged vectors (``labels`` are table rows); one writer thread."""
        rows = np.asarray(labels, dtype=np.int64)
        if rows.size == 0:
            return 0
        t0 = time.perf_counter()
        self._ensure_rows(int(rows.max()) + 1)
        old = self._label[rows]
        old = old[old >= 0]
        g = self._graph
        live_after = self._count + int(rows.size - old.size)
        grow = False
        if self.config.space == "mips":
            top = float(np.linalg.norm(vecs, axis=1).max())
            if top > self._radius:
                grow = self._count > 0
                self._radius = self.radius_growth * top
        if grow or (g.deleted + old.size > self.config.compact_ratio * max(live_after, 1) and old.size):
            self._indexed[rows] = vecs
            self._label[rows] = 0  # marks present; real labels come from the rebuild
            self._rebuild()
        else:
            with self._lock:
                if old.size:
                    g.delete(old)
                self._label[rows] = g.add(rows, self._lift(vecs))
                self._indexed[rows] = vecs
        self._count = live_after
        self.inserts += int(rows.size)
        self.last_refresh_s = time.perf_counter() - t0
        self.last_refresh_at = time.time()
        return int(rows.size)

    def _lift(self, vecs: FloatArray) -> FloatArray:
        """For ``mips``: append sqrt(R^2 - |x|^2) so every point has norm R; then for a query
        (q, 0), |q - x|^2 = |q|^2 + R^2 - 2 q.x, and L2 order is exactly inner-product order.
        HNSW is built for metric distances; on raw inner products of learned item vectors
        its graph degrades (measured on the replay: HR@20 0.584 with ``ip``, 0.595 even at
        ef 300, against 0.622 for exact search and 0.624 with ``mips``)."""
        if self.config.space != "mips":
            return np.ascontiguousarray(vecs, dtype=np.float32)
        sq = np.maximum(self._radius**2 - np.einsum("nd,nd->n", vecs, vecs), 0.0)
        return np.ascontiguousarray(np.concatenate([vecs, np.sqrt(sq)[:, None]], axis=1), dtype=np.float32)

    def _rebuild(self) -> None:
        """A fresh graph from every indexed vector, built off the lock and swapped in."""
        rows = np.flatnonzero(self._label >= 0).astype(np.int64)
        graph = _Graph(self.dim, self.config, max(self.config.initial_capacity, 2 * len(rows)))
        labels = graph.add(rows, self._lift(self._indexed[rows]))
        with self._lock:
            self._graph = graph
            self._label[rows] = labels
        self.rebuilds += 1

    def refresh(self, table: FloatArray, rows: list[int] | IntArray, limit: int | None = None) -> int:
        """``stage`` then ``write`` on the calling thread; returns points written."""
        return self.write(*self.stage(table, rows, limit))

    def query(
        self, q: FloatArray, k: int, fallback: FloatArray | None = None
    ) -> tuple[IntArray, npt.NDArray[np.float32]]:
        """Up to ``k`` nearest rows to ``q`` (one query vector) and their index distances.

        When a write holds the index and ``fallback`` (the current table, rows aligned with
        labels) is given, answers by exact inner-product search over it instead of waiting.
        """
        lifted = self.config.space == "mips"
        d_q = q.shape[-1]
        if d_q > self.dim:
            raise ValueError(f"query has {d_q} dimensions, the index {self.dim}")
        # Shorter queries are zero-padded (hnswlib itself reads ``dim`` floats whatever it gets).
        q_idx = np.zeros((1, self.dim + 1) if lifted else (1, self.dim), dtype=np.float32)
        q_idx[0, :d_q] = q.reshape(-1)
        q2 = q_idx[:, : self.dim]
        if self._lock.acquire(blocking=fallback is None):
            try:
                g = self._graph
                n = min(k, self._count)
                if n <= 0:
                    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
                while True:
                    try:
                        labels, dists = g.hnsw.knn_query(q_idx, k=n, num_threads=1)
                        break
                    except RuntimeError:
                        # Fewer live points reachable than asked (many deleted): ask for fewer.
                        if n == 1:
                            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
                        n //= 2
                rows: IntArray = g.row_of_label[labels[0]]
            finally:
                self._lock.release()
            d: npt.NDArray[np.float32] = dists[0]
            if rows.size and rows.min() < 0:  # a label deleted since (hnswlib skips deleted ones)
                keep = rows >= 0
                rows, d = rows[keep], d[keep]
            if lifted:  # back to 1 - q.x, as for the exact search: |q-x|^2 = |q|^2 + R^2 - 2 q.x
                q0 = q2[0]
                d = d * np.float32(0.5) + np.float32(1.0 - (float(q0 @ q0) + self._radius**2) / 2.0)
            return rows, d
        assert fallback is not None
        self.busy_fallbacks += 1
        return exact_top_k(fallback, q2[0, : fallback.shape[1]], k)


def exact_top_k(table: FloatArray, q: FloatArray, k: int) -> tuple[IntArray, npt.NDArray[np.float32]]:
    """Exact top-``k`` rows by inner product (the reference the index is tested against)."""
    if table.shape[0] == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = table @ q
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top.astype(np.int64), (1.0 - scores[top]).astype(np.float32)
