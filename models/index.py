"""An HNSW index (hnswlib) over item vectors that keeps up with a model learning online.

Concurrency rule (hnswlib's own: ``add_items``/``resize_index`` must never overlap
``knn_query`` on the same index): every hnswlib call on ``self._hnsw`` happens while holding
``self._lock``. Writers (``refresh``) may run on a background thread; a query that finds the
lock taken does not wait for a write or a resize to finish: it answers by exact search over
the caller's current vectors instead (``query(..., fallback=...)``). So the index grows
without blocking queries, and no query ever runs concurrently with a write.

Vectors change on every click, but re-inserting a point into HNSW costs far more than a
query, so ``refresh`` re-inserts only the rows that moved by more than ``drift_tol``
(relative L2) since they were last indexed, plus every new row. Candidates are re-scored
against the current vectors by the caller, so small drifts cost nothing in ranking quality.
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
    space: str = "ip"
    """hnswlib space: ``ip`` (inner product, what the scorer ranks by) or ``cosine``."""
    m: int = 16
    ef_construction: int = 100
    ef: int = 100
    drift_tol: float = 0.05
    seed: int = 0
    initial_capacity: int = 1024


class VectorIndex:
    """Approximate top-k over a growing, changing table of vectors."""

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self.dim = dim
        self._lock = threading.Lock()
        cap = self.config.initial_capacity
        self._hnsw = hnswlib.Index(space=self.config.space, dim=dim)
        self._hnsw.init_index(
            max_elements=cap,
            ef_construction=self.config.ef_construction,
            M=self.config.m,
            random_seed=self.config.seed,
        )
        self._hnsw.set_ef(self.config.ef)
        self._hnsw.set_num_threads(1)
        self._indexed: FloatArray = np.zeros((cap, dim), dtype=np.float32)
        self._present = np.zeros(cap, dtype=bool)
        self._count = 0
        self.inserts = 0
        """Points written to hnswlib so far (new or re-inserted)."""
        self.busy_fallbacks = 0
        """Queries answered by exact search because a write held the index."""
        self.last_refresh_s = 0.0
        self.last_refresh_at = 0.0

    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return int(self._indexed.shape[0])

    def _ensure_capacity(self, need: int) -> None:
        """Grow by doubling; caller holds the lock."""
        cap = self.capacity
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        self._hnsw.resize_index(cap)
        grown = np.zeros((cap, self.dim), dtype=np.float32)
        grown[: self.capacity] = self._indexed
        present = np.zeros(cap, dtype=bool)
        present[: len(self._present)] = self._present
        self._indexed, self._present = grown, present

    def select_stale(self, table: FloatArray, rows: list[int] | IntArray) -> IntArray:
        """Which of ``rows`` must be (re)inserted: new ones, and those that drifted."""
        r = np.asarray(rows, dtype=np.int64)
        if r.size == 0:
            return r
        inside = r < self.capacity
        new_rows = r[~inside]
        r_in = r[inside]
        present = self._present[r_in]
        cur = table[r_in]
        old = self._indexed[r_in]
        moved = np.linalg.norm(cur - old, axis=1)
        scale = np.linalg.norm(old, axis=1) + 1e-6
        stale = ~present | (moved > self.config.drift_tol * scale)
        out: IntArray = np.concatenate([r_in[stale], new_rows])
        return out

    def stage(self, table: FloatArray, rows: list[int] | IntArray) -> tuple[IntArray, FloatArray]:
        """Pick the stale ``rows`` and copy their vectors (on the thread that owns ``table``)."""
        stale = self.select_stale(table, rows)
        return stale, np.ascontiguousarray(table[stale], dtype=np.float32)

    def write(self, labels: IntArray, vecs: FloatArray) -> int:
        """Insert or update staged vectors; safe on a background thread (takes the lock)."""
        if labels.size == 0:
            return 0
        t0 = time.perf_counter()
        with self._lock:
            self._ensure_capacity(int(labels.max()) + 1)
            self._hnsw.add_items(vecs, labels, num_threads=1)
            self._indexed[labels] = vecs
            newly = int((~self._present[labels]).sum())
            self._present[labels] = True
            self._count += newly
        self.inserts += int(labels.size)
        self.last_refresh_s = time.perf_counter() - t0
        self.last_refresh_at = time.time()
        return int(labels.size)

    def refresh(self, table: FloatArray, rows: list[int] | IntArray) -> int:
        """``stage`` then ``write`` on the calling thread; returns points written."""
        return self.write(*self.stage(table, rows))

    def query(
        self, q: FloatArray, k: int, fallback: FloatArray | None = None
    ) -> tuple[IntArray, npt.NDArray[np.float32]]:
        """Up to ``k`` nearest rows to ``q`` (one query vector) and their index distances.

        When a write holds the index and ``fallback`` (the current table, rows aligned with
        labels) is given, answers by exact inner-product search over it instead of waiting.
        """
        q2 = np.ascontiguousarray(q.reshape(1, -1), dtype=np.float32)
        if self._lock.acquire(blocking=fallback is None):
            try:
                n = min(k, self._count)
                if n <= 0:
                    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
                try:
                    labels, dists = self._hnsw.knn_query(q2, k=n, num_threads=1)
                except RuntimeError:
                    # hnswlib found fewer than n reachable points (e.g. ties among many
                    # equal vectors): answer exactly below rather than fail the click.
                    labels = None
            finally:
                self._lock.release()
            if labels is not None:
                return labels[0].astype(np.int64), dists[0].astype(np.float32)
            if fallback is None:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            return exact_top_k(fallback, q2[0], k)
        assert fallback is not None
        self.busy_fallbacks += 1
        return exact_top_k(fallback, q2[0], k)


def exact_top_k(table: FloatArray, q: FloatArray, k: int) -> tuple[IntArray, npt.NDArray[np.float32]]:
    """Exact top-``k`` rows by inner product (the reference the index is tested against)."""
    if table.shape[0] == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = table @ q
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top.astype(np.int64), (1.0 - scores[top]).astype(np.float32)
