"""Compiled (numba) top-k for the index: one bounded heap per query, fed band by band.

``VectorIndex.query_many`` keeps, for each query of a batch, a max-heap of the ``k`` best
(distance, row) pairs seen so far (``offer``): small bands offer every live vector's exact
distance, graph bands what hnswlib returned; ``sorted_heaps`` turns the heaps into
best-first lists.

Small bands are scored here too (``offer_screened``): a product per vector and query in
compiled code, reassociated so it vectorises (without that, a compiled dot measured 20x
slower than BLAS), and the same floats for a query whatever the batch, which one BLAS
matrix-matrix product would not promise: BLAS's product only screens out the vectors
that cannot enter a heap, which is most of them. The heap costs a comparison per vector, and ties
are broken by row, not by where a partition put them (the ``argpartition`` + ``lexsort`` +
masking this replaced cost 3-4 times the product). ``rank`` then re-scores each session's
candidates exactly, the whole batch in one call.
"""

from __future__ import annotations

import numpy as np

from models.kernels import _GOLDEN, _compiled, prefetch_row


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


@_compiled(inline="always")
def _push(hdb: np.ndarray, hrb: np.ndarray, n: int, k: int, d: float, r: int) -> int:
    """Offer (``d``, ``r``) to the max-heap ``hdb[:n]``/``hrb[:n]`` of capacity ``k``;
    returns its new size."""
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
    return n


@_compiled()
def offer(dists: np.ndarray, rows: np.ndarray, hd: np.ndarray, hr: np.ndarray, hn: np.ndarray) -> None:
    """Offer (``dists[b, j]``, ``rows[b, j]``) to heap ``b`` for every ``j`` (rows < 0 are
    skipped; a single row of ``rows`` serves every query). Heap ``b`` is the max-heap
    ``hd[b, :hn[b]]``/``hr[b, :hn[b]]``, capacity ``hd.shape[1]``, worst at the root.

    The heap steps are inlined (``_push``, ``_sift_down``): a compiled call that takes
    arrays pays reference counting on them, which measured ten times the heap work itself."""
    k = hd.shape[1]
    shared = rows.shape[0] == 1
    for b in range(dists.shape[0]):
        db = dists[b]
        rb = rows[0] if shared else rows[b]
        hdb = hd[b]
        hrb = hr[b]
        n = hn[b]
        for j in range(db.shape[0]):
            if rb[j] >= 0:
                n = _push(hdb, hrb, n, k, db[j], rb[j])
        hn[b] = n


@_compiled(fastmath={"reassoc", "contract"})
def _dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    """float32 dot product over ``a``'s length; reassociation lets it run in SIMD lanes, and
    being one compiled function it sums in the same order for a query whatever the batch
    around it."""
    s = np.float32(0.0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@_compiled()
def offer_screened(scores: np.ndarray, vecs: np.ndarray, rows: np.ndarray, q: np.ndarray, ask: np.ndarray,
                   qn: np.ndarray, margin: float, hd: np.ndarray, hr: np.ndarray, hn: np.ndarray,
                   tops: np.ndarray) -> None:
    """Offer the exact distance ``1 - vecs[j] . q[b]`` of every vector ``j`` whose row
    ``rows[j]`` is >= 0 to heap ``b``, for every query ``b = ask[i]`` (``q`` may have more
    columns than ``vecs``: they are not read): a small band answered without its graph.

    ``scores[j, i]`` (``vecs[j] . q[ask[i]]``, from one BLAS product over the queries
    asked) screens: a vector is scored here only when its BLAS score is within a slack of
    ``qn[b] * margin + 1e-6`` of what could still enter heap ``b``. BLAS rounds differently
    for different batch shapes, so what enters the heap is this module's own product, and
    the heaps end as if every vector had been scored here provided the slack bounds the two
    products' rounding difference (scores of +inf: no screen, the reference the tests hold
    this to). A vector per row of ``scores``, the queries along it: BLAS writes that
    layout 1.3x faster than its transpose (dim 65, 64 queries by 8k vectors, one thread),
    and the passes below then run across the queries in SIMD lanes.

    The best score of each block of ``_BLOCK`` vectors goes to ``tops`` (C-contiguous, of
    shape ``(len(vecs) // _BLOCK, len(ask))``); a heap not full yet is bounded before the
    scan by ``floors`` from them (from the scores themselves when the band has fewer than k
    blocks). Filled in the vectors' order, such a heap kept raising its worst
    entry and took about k * ln(m / k) products on the way: 390 a query over 8.2k learned
    vectors at k = 64, about 90 with the floor. A full heap keeps its own cut. The scan
    takes a block at a time for every query (the block's scores and vectors stay in cache
    across the queries), each query's vectors in order, so a heap is offered what the
    query alone would offer it.

    The heaps are the batch's own, indexed through ``ask`` and the slack made here: a
    gather and a scatter of them, and the slack's numpy steps, cost more than the band's
    products at a few queries per batch. ``q`` must have one memory layout whatever its
    length (the index passes its C-contiguous query array): numba compiles one version per
    layout, and a single query given as a contiguous row of a wider array got its own
    version, which summed in another order than the batch's (a test caught it)."""
    k = hd.shape[1]
    one = np.float32(1.0)
    m = vecs.shape[0]
    nq = ask.shape[0]
    nb = m // _BLOCK
    _block_tops(scores, tops, nb, nq)
    floor = np.full(nq, -np.inf, dtype=np.float32)
    if k > 0 and (hn[ask] < k).any():
        # Fewer than k blocks (a small band): the floor from the vectors' own scores.
        floors(tops if nb >= k else scores, k, _FLOOR_ROUNDS, floor)
    cuts = np.empty(nq, dtype=np.float32)
    slacks = np.empty(nq, dtype=np.float32)
    for i in range(nq):
        b = ask[i]
        slacks[i] = qn[b] * margin + 1e-6
        floor[i] = -np.inf if hn[b] == k else floor[i] - slacks[i]
        cuts[i] = floor[i] if hn[b] < k else one - hd[b, 0] - slacks[i]
    for blk in range(nb + 1):  # the last, partial block has no top: it is always scanned
        lo = blk * _BLOCK
        hi = min(lo + _BLOCK, m)
        for i in range(nq):
            cut = cuts[i]
            if blk < nb and tops[blk, i] < cut:
                continue
            b = ask[i]
            hdb = hd[b]
            hrb = hr[b]
            qb = q[b]
            n = hn[b]
            for j in range(lo, hi):
                if scores[j, i] < cut:
                    continue
                r = rows[j]
                if r < 0:
                    continue
                d = one - _dot(vecs[j], qb)
                if n < k or _worse(hdb[0], hrb[0], d, r):
                    n = _push(hdb, hrb, n, k, d, r)
                    if n == k:
                        cut = max(floor[i], one - hdb[0] - slacks[i])
            hn[b] = n
            cuts[i] = cut


_BLOCK = 16
"""Scores per block: ``offer_screened`` skips a block whose largest is below its cut."""

_FLOOR_ROUNDS = 12
"""Halvings of ``floors``' search: a floor ends at most 2**-12 of the largest top below the
k-th largest top (8 to 16 measured the same: a lower floor's few more products against
the search's passes)."""

_AHEAD = 4
"""How many rows ahead a scoring loop asks for the row it will read (``prefetch_row``)."""


@_compiled(inline="always", fastmath={"nnan"})
def _block_tops(scores: np.ndarray, tops: np.ndarray, nb: int, nq: int) -> None:
    """``tops[blk, i]``: the largest of ``scores[blk * _BLOCK:(blk + 1) * _BLOCK, i]``, for
    every query ``i`` at once (SIMD lanes across the queries; infinities allowed: +inf is
    ``offer_screened``'s "no screen")."""
    for blk in range(nb):
        lo = blk * _BLOCK
        t = tops[blk]
        first = scores[lo]
        for i in range(nq):
            t[i] = first[i]
        for j in range(lo + 1, lo + _BLOCK):
            s = scores[j]
            for i in range(nq):
                t[i] = max(t[i], s[i])


@_compiled(fastmath={"nnan"})
def floors(tops: np.ndarray, k: int, rounds: int, out: np.ndarray) -> None:
    """``out[i]``: a value that at least ``k`` (>= 1) of the nonzero ``tops[:, i]`` reach,
    found by halving ``[smallest, largest]`` of them ``rounds`` times (-inf when fewer than
    ``k`` are nonzero): each of those k blocks holds a live vector scoring at least that, so
    heap ``i``'s k-th best ends at least that high, up to the products' rounding (the caller
    subtracts the slack). Nonzero, because a deleted vector's place in an array is zeroed
    (``_Graph.delete``) and scores exactly 0: a vector moved to another band would otherwise
    leave its old copy behind, which could top every live one. A block whose top is 0 is
    left out (its live vectors score at most 0, or exactly 0: a weaker floor, never a wrong
    one). Negative tops count: with positive ones only, most queries of a session stream,
    whose scores are nine in ten below 0, had no floor in bands under ~5.7k vectors and
    scored every vector exactly. Each round counts across the queries in SIMD lanes: a
    quickselect per query (the k-th largest exactly) took 3.5 us a query over 540 blocks,
    these 12 rounds about 0.5."""
    nb, nq = tops.shape
    lo = np.full(nq, np.inf, dtype=np.float32)
    hi = np.full(nq, -np.inf, dtype=np.float32)
    mid = np.empty(nq, dtype=np.float32)
    nonzero = np.zeros(nq, dtype=np.int64)
    count = np.empty(nq, dtype=np.int64)
    for blk in range(nb):
        t = tops[blk]
        for i in range(nq):
            if t[i] != 0:
                nonzero[i] += 1
                lo[i] = min(lo[i], t[i])
                hi[i] = max(hi[i], t[i])
    for i in range(nq):
        if nonzero[i] < k:  # no floor: kept finite for the rounds' arithmetic
            lo[i] = hi[i] = 0.0
    for _ in range(rounds):  # lo: at least k nonzero tops reach it
        for i in range(nq):
            mid[i] = (lo[i] + hi[i]) * np.float32(0.5)
            count[i] = 0
        for blk in range(nb):
            t = tops[blk]
            for i in range(nq):
                count[i] += (t[i] >= mid[i]) & (t[i] != 0)
        for i in range(nq):
            if count[i] >= k:
                lo[i] = mid[i]
            else:
                hi[i] = mid[i]
    for i in range(nq):
        out[i] = lo[i] if nonzero[i] >= k else -np.inf


@_compiled()
def asking(qn: np.ndarray, qa: np.ndarray, ql: np.ndarray, hd: np.ndarray, hn: np.ndarray, k: int,
           radius: float, head_max: float, last_lo: float, last_hi: float) -> np.ndarray:
    """The queries (their indices, in order) whose heaps a band could still add to: those not
    full, and those whose worst kept distance is at least 1 minus the band's bound, the
    smaller of ``radius * qn`` and ``qa * head_max`` plus the larger of ``ql * last_lo`` and
    ``ql * last_hi`` (``VectorIndex._asking``), widened by 1e-5 of ``radius * qn`` and by
    1e-6 for the scores' float32 rounding (at most dim * 2**-24 of it)."""
    out = np.empty(qn.shape[0], dtype=np.int64)
    m = 0
    for b in range(qn.shape[0]):
        if hn[b] < k:
            out[m] = b
            m += 1
            continue
        cs = radius * qn[b]
        bound = min(cs, qa[b] * head_max + max(ql[b] * last_hi, ql[b] * last_lo)) + cs * 1e-5 + 1e-6
        if 1.0 - bound <= hd[b, 0]:
            out[m] = b
            m += 1
    return out[:m]


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
            x = np.float64(q[b, j])  # numba's float() keeps a float32 one: products rounded
            s += x * x
        out[b] = s
    return out


@_compiled()
def drifts(cur: np.ndarray, rows: np.ndarray, indexed: np.ndarray, label: np.ndarray,
           out: np.ndarray) -> None:
    """``out[i]``: how far row ``rows[i]``, now ``cur[i]``, moved from what the index holds
    for it (``indexed``, where ``label`` >= 0), relative to that: |cur - old| / (|old| +
    1e-6); +inf for a row not indexed yet, -1 for one not indexed whose vector is all zeros
    (it cannot rank anything yet). One pass, each indexed row asked for ahead: with numpy's
    gathers, norms and temporaries ``select_stale`` took 470 ns a row of a 1M-row table,
    with this 375, most of it waiting on memory (scratch timing)."""
    m = cur.shape[0]
    d = cur.shape[1]
    for i in range(min(m, _AHEAD)):
        prefetch_row(indexed, rows[i])
    for i in range(m):
        if i + _AHEAD < m:
            prefetch_row(indexed, rows[i + _AHEAD])
        r = rows[i]
        if label[r] < 0:
            s = 0.0
            for j in range(d):
                x = np.float64(cur[i, j])
                s += x * x
            out[i] = np.inf if s > 0.0 else -1.0
            continue
        dd = 0.0
        oo = 0.0
        for j in range(d):
            o = np.float64(indexed[r, j])
            x = np.float64(cur[i, j]) - o
            dd += x * x
            oo += o * o
        out[i] = np.sqrt(dd) / (np.sqrt(oo) + 1e-6)


@_compiled()
def extremes(v: np.ndarray) -> tuple[float, float, float, float]:
    """Over the rows of ``v`` (at least one): the largest squared norm, the largest squared
    norm without the last column, and the smallest and largest last column (float64 sums
    of float32 products, as ``sq_norms``)."""
    last = v.shape[1] - 1
    sq_max = head_max = 0.0
    lo = np.inf
    hi = -np.inf
    for b in range(v.shape[0]):
        s = 0.0
        for j in range(last):
            y = np.float64(v[b, j])
            s += y * y
        x = np.float64(v[b, last])
        head_max = max(head_max, s)
        sq_max = max(sq_max, s + x * x)
        lo = min(lo, x)
        hi = max(hi, x)
    return sq_max, head_max, lo, hi


@_compiled()
def add_clicks(top: np.ndarray, n_top: np.ndarray, pop: np.ndarray, rows: np.ndarray, scale: float,
               growth: float, limit: float) -> tuple[int, float]:
    """Add each of ``rows``' clicks to ``pop`` in turn, each ``growth`` times the one before
    (decayed counts, ``Recommender.learn_many``), keeping ``top`` up to date (``bump_top``).
    Stops before a weight would pass ``limit``; returns the clicks added and the last weight,
    and the caller rescales and goes on. One call a batch, where the loop in Python paid a
    numba dispatch (``bump_top``) and numpy scalar writes per click."""
    done = 0
    for i in range(rows.shape[0]):
        nxt = scale * growth
        if nxt > limit:
            break
        scale = nxt
        pop[rows[i]] += scale
        bump_top(top, n_top, pop, rows[i])
        done += 1
    return done, scale


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


@_compiled(inline="always")
def _slot(keys: np.ndarray, row: int) -> int:
    """Where ``row`` is, or would go, in the open-addressed set ``keys`` (-1: empty; its
    size a power of two, at least twice what it holds, so a probe ends)."""
    mask = keys.shape[0] - 1
    i = int((np.uint64(row) * _GOLDEN) >> np.uint64(40)) & mask
    while keys[i] != row and keys[i] >= 0:
        i = (i + 1) & mask
    return i


@_compiled(inline="always")
def _before(s1: float, r1: int, s2: float, r2: int) -> bool:
    """(s1, r1) ranks before (s2, r2): a higher score, or the same score and a smaller row."""
    return s1 > s2 or (s1 == s2 and r1 < r2)


@_compiled()
def rank(w_in: np.ndarray, w_out: np.ndarray, counts: np.ndarray, q: np.ndarray, q_out: np.ndarray,
         reverse_weight: float, popularity_weight: float, labels: np.ndarray,
         seen_rows: np.ndarray, seen_boost: np.ndarray, seen_start: np.ndarray, exclude_seen: bool,
         out_rows: np.ndarray, out_scores: np.ndarray, out_n: np.ndarray) -> None:
    """Each session's top ``out_rows.shape[1]`` rows, re-scored exactly (best first, ties by
    smaller row): session ``b``'s candidates are ``labels[b]`` (rows < 0 skipped, repeats
    counted once) and, unless ``exclude_seen``, its own items
    ``seen_rows[seen_start[b]:seen_start[b + 1]]`` (distinct), each scored
    ``out(c).q + reverse_weight * in(c).q_out + popularity_weight * log(1 + count)`` plus its
    ``seen_boost``; with ``exclude_seen`` the session's items are left out instead.
    ``reverse_weight`` 0 skips the reverse term; ``out_n[b]`` is -1 when session ``b`` had
    no candidate at all.

    Candidates are told apart by a small hash set (the session's items in it first, tagged
    with their place), not by sorting, and the best are kept by insertion into a list of
    ``k``, not by an argsort; the rows of both tables are asked for ``_AHEAD`` candidates
    before they are read (``prefetch_row``). Against the sorted version, 64 candidates and 5
    session items a query, alternated in one process: 7.3 -> 4.9 us a query at 10k items,
    13.7 -> 8.2 at 100k, 17.2 -> 13.2 at 1M (batches of 64; of 8 the same within 5%). The
    per-session numpy version before both (sort, unique, two gathers and products, a lookup
    of the session's items, argsort) cost tens of small calls per session, several times
    the arithmetic."""
    k = out_rows.shape[1]
    rw = np.float32(reverse_weight)
    pw = np.float32(popularity_weight)
    width = labels.shape[1]
    most = 0
    for b in range(labels.shape[0]):
        most = max(most, seen_start[b + 1] - seen_start[b])
    size = 16
    while size < 2 * (width + most):
        size *= 2
    keys = np.empty(size, dtype=np.int64)
    tags = np.empty(size, dtype=np.int64)  # the session item's place in seen_rows; -1: a label
    cand = np.empty(width + most, dtype=np.int64)
    bonus = np.empty(width + most, dtype=np.float32)
    top_r = np.empty(max(k, 1), dtype=np.int64)
    top_s = np.empty(max(k, 1), dtype=np.float32)
    for b in range(labels.shape[0]):
        s0, s1 = seen_start[b], seen_start[b + 1]
        keys[:] = -1
        for p in range(s0, s1):
            i = _slot(keys, seen_rows[p])
            keys[i] = seen_rows[p]
            tags[i] = p
        m = 0
        labelled = False
        for j in range(width):
            r = labels[b, j]
            if r < 0:
                continue
            labelled = True
            i = _slot(keys, r)
            if keys[i] < 0:
                keys[i] = r
                tags[i] = -1
                cand[m] = r
                bonus[m] = 0.0
                m += 1
            elif tags[i] >= 0:  # one of the session's items, first met among the labels
                if not exclude_seen:
                    cand[m] = r
                    bonus[m] = seen_boost[tags[i]]
                    m += 1
                tags[i] = -1
        if not exclude_seen:
            for p in range(s0, s1):
                if tags[_slot(keys, seen_rows[p])] == p:  # not among the labels
                    cand[m] = seen_rows[p]
                    bonus[m] = seen_boost[p]
                    m += 1
        if not labelled and (exclude_seen or s1 == s0):
            out_n[b] = -1  # nothing to rank: the caller falls back
            continue
        for j in range(min(_AHEAD, m)):
            prefetch_row(w_out, cand[j])
            if rw != 0:
                prefetch_row(w_in, cand[j])
        n = 0
        for j in range(m if k > 0 else 0):
            if j + _AHEAD < m:
                prefetch_row(w_out, cand[j + _AHEAD])
                if rw != 0:
                    prefetch_row(w_in, cand[j + _AHEAD])
            r = cand[j]
            s = _dot(w_out[r], q[b])
            if rw != 0:
                s = s + rw * _dot(w_in[r], q_out[b])
            if pw != 0:
                s = s + pw * np.float32(np.log1p(counts[r]))
            s = s + bonus[j]
            if n == k and not _before(s, r, top_s[k - 1], top_r[k - 1]):
                continue
            at = n if n < k else k - 1  # the free place, or the worst one's
            while at > 0 and _before(s, r, top_s[at - 1], top_r[at - 1]):
                top_s[at] = top_s[at - 1]
                top_r[at] = top_r[at - 1]
                at -= 1
            top_s[at] = s
            top_r[at] = r
            if n < k:
                n += 1
        for j in range(n):
            out_rows[b, j] = top_r[j]
            out_scores[b, j] = top_s[j]
        out_n[b] = n
