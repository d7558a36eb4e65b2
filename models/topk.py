"""Compiled (numba) top-k for the index: one bounded heap per query, fed band by band.

``VectorIndex.query_many`` keeps, for each query of a batch, a max-heap of the ``k`` best
(distance, row) pairs seen so far (``offer``): small bands offer every live vector's exact
distance, graph bands what hnswlib returned; ``sorted_heaps`` turns the heaps into
best-first lists.

Small bands are scored by numpy (one BLAS matrix-vector product per query: the same floats
for a query whatever the batch, which one matrix-matrix product would not promise; a
compiled dot without fastmath measured 20x slower than BLAS), then selected here: the
``argpartition`` + ``lexsort`` + masking that followed the product cost 3-4 times the product
(measured ~96 us per band and query at 2,000 vectors, the product ~20). Here the selection
costs a comparison per vector, and ties are broken by row, not by where a partition put them.
"""

from __future__ import annotations

import numpy as np

from models.kernels import _compiled


@_compiled(inline="always")
def _worse(d1: float, r1: int, d2: float, r2: int) -> bool:
    """(d1, r1) ranks after (d2, r2): larger distance, or the same distance and larger row."""
    return d1 > d2 or (d1 == d2 and r1 > r2)


@_compiled(inline="always")
def _sift_down(hdb: np.ndarray, hrb: np.ndarray, size: int, d: float, r: int) -> None:
    """Put (``d``, ``r``) at the root of the max-heap ``hdb[:size]``/``hrb[:size]`` and move
    it down to its place (the root's old pair is dropped). Inlined by numba, so the callers
    pay no call (nor reference counting on the arrays) for it."""
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _worse(hdb[child + 1], hrb[child + 1], hdb[child], hrb[child]):
            child += 1
        if not _worse(hdb[child], hrb[child], d, r):
            break
        hdb[i] = hdb[child]
        hrb[i] = hrb[child]
        i = child
    hdb[i] = d
    hrb[i] = r


@_compiled()
def offer(dists: np.ndarray, rows: np.ndarray, hd: np.ndarray, hr: np.ndarray, hn: np.ndarray) -> None:
    """Offer (``dists[b, j]``, ``rows[b, j]``) to heap ``b`` for every ``j`` (rows < 0 are
    skipped; a single row of ``rows`` serves every query). Heap ``b`` is the max-heap
    ``hd[b, :hn[b]]``/``hr[b, :hn[b]]``, capacity ``hd.shape[1]``, worst at the root.

    The sift-up is written out and the sift-down inlined (``_sift_down``): a compiled call
    that takes arrays pays reference counting on them, which measured ten times the heap
    work itself."""
    k = hd.shape[1]
    shared = rows.shape[0] == 1
    for b in range(dists.shape[0]):
        db = dists[b]
        rb = rows[0] if shared else rows[b]
        hdb = hd[b]
        hrb = hr[b]
        n = hn[b]
        for j in range(db.shape[0]):
            r = rb[j]
            if r < 0:
                continue
            d = db[j]
            if n < k:  # not full: sift up from the end
                i = n
                n += 1
                while i > 0:
                    parent = (i - 1) >> 1
                    if not _worse(d, r, hdb[parent], hrb[parent]):
                        break
                    hdb[i] = hdb[parent]
                    hrb[i] = hrb[parent]
                    i = parent
                hdb[i] = d
                hrb[i] = r
            elif k > 0 and _worse(hdb[0], hrb[0], d, r):  # better than the worst: replace it
                _sift_down(hdb, hrb, k, d, r)
        hn[b] = n


@_compiled()
def sorted_heaps(hd: np.ndarray, hr: np.ndarray, hn: np.ndarray) -> None:
    """Sort each heap in place, best first (heapsort: the worst goes to the end each step)."""
    for b in range(hd.shape[0]):
        hdb = hd[b]
        hrb = hr[b]
        for end in range(hn[b] - 1, 0, -1):
            d, r = hdb[end], hrb[end]
            hdb[end], hrb[end] = hdb[0], hrb[0]
            _sift_down(hdb, hrb, end, d, r)


@_compiled()
def sq_norms(q: np.ndarray) -> np.ndarray:
    """Each row's squared norm (float64 sum of float32 products, the same for any batch)."""
    out = np.zeros(q.shape[0], dtype=np.float64)
    for b in range(q.shape[0]):
        s = 0.0
        for j in range(q.shape[1]):
            s += float(q[b, j]) * float(q[b, j])
        out[b] = s
    return out


@_compiled()
def bump_top(top: np.ndarray, n_top: np.ndarray, pop: np.ndarray, row: int) -> None:
    """Keep ``top[:n_top[0]]`` the rows of the largest ``pop`` (ties: smaller row first) after
    ``pop[row]`` alone rose: ``row`` can only enter or move up, so one insertion step does it
    (the list is at most ``len(top)`` long; rows outside it are never looked at)."""
    n = n_top[0]
    if top.shape[0] == 0:
        return
    pos = -1
    for i in range(n):
        if top[i] == row:
            pos = i
            break
    if pos < 0:
        if n < top.shape[0]:
            pos = n
            n_top[0] = n + 1
        else:
            last = top[n - 1]
            if pop[row] < pop[last] or (pop[row] == pop[last] and row >= last):
                return
            pos = n - 1
        top[pos] = row
    while pos > 0:
        prev = top[pos - 1]
        if pop[row] > pop[prev] or (pop[row] == pop[prev] and row < prev):
            top[pos] = prev
            pos -= 1
        else:
            break
    top[pos] = row


@_compiled()
def weighted_means(
    table: np.ndarray, rows: np.ndarray, wts: np.ndarray, starts: np.ndarray, lens: np.ndarray
) -> np.ndarray:
    """Row ``i``: the sum of ``wts[j] * table[rows[j]]`` over ``j`` in ``starts[i]`` +
    ``range(lens[i])`` over the sum of those weights, in float32 and in the order numpy's
    ``(w[:, None] * table[rows]).sum(axis=0) / w.sum()`` takes for one short session (a
    running sum; the caller keeps numpy for 8 weights or more, which numpy sums
    pairwise), so a batch gives the floats one session at a time gave."""
    d = table.shape[1]
    out = np.zeros((starts.shape[0], d), dtype=np.float32)
    for i in range(starts.shape[0]):
        s = starts[i]
        total = wts[s]
        for j in range(d):
            out[i, j] = wts[s] * table[rows[s], j]
        for p in range(s + 1, s + lens[i]):
            total = total + wts[p]
            w = wts[p]
            r = rows[p]
            for j in range(d):
                out[i, j] = out[i, j] + w * table[r, j]
        for j in range(d):
            out[i, j] = out[i, j] / total
    return out
