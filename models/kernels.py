"""Compiled (numba) kernels for the per-click SGNS learner.

``learn_click`` does everything one click costs the learner in one call: the window's pairs,
the replayed pairs sampled from the ring buffer, the push of the fresh pairs into the ring,
the negatives drawn from the cumulative unigram**power table (the row
``np.searchsorted(..., side="right")`` would give, found through a guide table), one
sequential SGD step per pair (word2vec's: the output rows are updated as they are visited,
the input row once at the end of its pair), and the bookkeeping of which output rows
changed (for the index refresh) and of what every changed row was when last shared (for
model sharing). ``learn_clicks`` runs it for a batch of clicks in one call.

The negatives of one click are drawn once, as a small pool its pairs take turns from (the
shared negatives of Ji et al., "Parallelizing Word2Vec in Shared and Distributed Memory",
2016): a click's ~21 pairs then draw and touch ~20 output rows for their negatives instead of
~105 (measured on its own: 1.3-1.5x the learner's speed).

Randomness comes from a splitmix64 generator whose state lives in a one-element ``uint64``
array owned by the caller, so a model is deterministic for its seed and two models never
share a stream (numba's own ``np.random`` state is per thread, shared by every model).

``pair_step`` is the one-pair update on its own, so tests can compare it with the numpy
reference ``models.sgns.sgns_step`` and with the numerical gradient of ``sgns_loss``.

Compiled with ``cache=True``: the machine code lands next to this file in ``__pycache__``
(or under ``NUMBA_CACHE_DIR``), so a new process loads it instead of compiling again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# reassoc lets LLVM vectorise the dot products; results stay deterministic for one build.
_FASTMATH = {"reassoc", "contract"}



def _compiled(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``njit(cache=True, nogil=True, error_model="numpy")``; without the on-disk cache when
    numba finds no writable place for it (read-only install and no NUMBA_CACHE_DIR):
    compiled per process. numpy's error model (a division by zero gives inf, it does not
    raise) drops a check per division: a pair step ran 20% faster alone (545 -> 430 ns), and
    no division here can be by zero (each is guarded or by 1 + exp(.))."""

    def wrap(fn: Callable[..., Any]) -> Any:
        try:
            return njit(cache=True, nogil=True, error_model="numpy", **options)(fn)
        except RuntimeError:
            return njit(nogil=True, error_model="numpy", **options)(fn)

    return wrap


@intrinsic
def _prefetch(typingctx: Any, arr: Any, row: Any, col: Any) -> Any:
    """Ask the CPU to fetch the cache line holding ``arr[row, col]`` (LLVM's
    ``llvm.prefetch``: a read, kept in every cache level); no value, no fault on any address."""
    sig = types.void(arr, row, col)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        rw, locality, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
        builder.call(fn, [builder.bitcast(ptr, i8p), rw, locality, data])
        return context.get_dummy_value()

    return sig, codegen


@_compiled(inline="always")
def prefetch_row(arr: np.ndarray, row: int) -> None:
    """Start fetching ``arr[row]`` (float32: 16 to a 64-byte line) before it is read.

    A loop over random rows of a table larger than L2 waits on each row in turn: the
    compiled re-ranking spent half its time so at 100k items (scratch timing: 5.7 against
    4.4 us a query for 69 rows of two tables when each row is asked for four rows ahead)."""
    for c in range(0, arr.shape[1], 16):
        _prefetch(arr, row, c)  # type: ignore[call-arg]  # numba's @intrinsic drops typingctx


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0


def seed_state(seed: int) -> np.ndarray:
    """A generator state for ``seed`` (a one-element uint64 array the kernels advance)."""
    return np.array([(int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64], dtype=np.uint64)


@_compiled()
def next_uniform(state: np.ndarray) -> float:
    """A float64 uniform in [0, 1) (splitmix64)."""
    s = state[0] + _GOLDEN
    state[0] = s
    z = (s ^ (s >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return float(z >> _S11) * _INV53


@_compiled()
def draw_one(cum: np.ndarray, guide: np.ndarray, n_build: int, state: np.ndarray) -> int:
    """One row drawn in proportion to the increments of ``cum[:n_build]`` (0 if empty).

    The same row as ``np.searchsorted(cum, u * cum[-1], side="right")`` (the first index whose
    cumulative weight exceeds the draw), found from ``guide`` (``guide[b]`` is that index for
    the draw ``b / len(guide)`` of the way up; see ``guide_table``) plus a step or two, not a
    binary search: two or three memory reads instead of log2(n) cache misses.
    """
    if n_build <= 0:
        return 0
    total = cum[n_build - 1]
    if total <= 0.0:
        return 0
    u = next_uniform(state)
    x = u * total
    nb = guide.shape[0]
    b = int(u * nb)
    if b >= nb:
        b = nb - 1
    i = guide[b]
    if i > n_build - 1:
        i = n_build - 1
    while i > 0 and cum[i - 1] > x:  # rounding put the bucket's start past the answer
        i -= 1
    while i < n_build - 1 and cum[i] <= x:
        i += 1
    return i


@_compiled()
def guide_table(cum: np.ndarray) -> np.ndarray:
    """``guide[b]`` = first index with ``cum > b / n * cum[-1]``, n = len(cum) (the last index
    if none). The thresholds ascend, so one merge-like pass finds them all: numpy's
    searchsorted took 260 us for 10k items, most of a rebuild of the negatives table."""
    n = cum.shape[0]
    out = np.zeros(max(n, 1), dtype=np.int32)
    if n == 0 or cum[n - 1] <= 0.0:
        return out
    step = cum[n - 1] / n
    i = 0
    for b in range(n):
        x = b * step
        while i < n - 1 and cum[i] <= x:
            i += 1
        out[b] = i
    return out


@_compiled()
def smoothed_cumsum(counts: np.ndarray, n: int, power: float) -> np.ndarray:
    """Cumulative sum of ``counts[:n] ** power``; 0.75 (word2vec's) as sqrt(c) * sqrt(sqrt(c)),
    a fifth of the time of a general power."""
    out = np.empty(n, dtype=np.float64)
    total = 0.0
    for i in range(n):
        c = counts[i]
        if power == 0.75:
            r = math.sqrt(c)
            total += r * math.sqrt(r)
        else:
            total += c**power
        out[i] = total
    return out


# The logistic function and its log tabulated on [-8, 8] at 1/256 steps and read with linear
# interpolation (word2vec's EXP_TABLE idea, plus interpolation): within 5e-7 of the exact
# values; outside the table they are computed. An exp per row and a log per loss term were
# a fifth of the learner's time on the bench stream.
_TAB_LO = -8.0
_TAB_STEPS = 256.0
_TAB_X = np.arange(4097) / _TAB_STEPS + _TAB_LO
_SIG_TABLE = 1.0 / (1.0 + np.exp(-_TAB_X))
_LOGSIG_TABLE = -np.log1p(np.exp(-_TAB_X))


@_compiled()
def _lerp(table: np.ndarray, x: float) -> float:
    f = (x - _TAB_LO) * _TAB_STEPS
    i = int(f)
    lo = table[i]
    return lo + (table[i + 1] - lo) * (f - i)


@_compiled()
def sigmoid(x: float) -> float:
    """1 / (1 + exp(-x))."""
    if -_TAB_LO > x > _TAB_LO:
        return _lerp(_SIG_TABLE, x)
    return 1.0 / (1.0 + math.exp(-min(max(x, -30.0), 30.0)))


@_compiled()
def log_sigmoid(x: float) -> float:
    """log(1 / (1 + exp(-x))), without overflow for large negative x."""
    if -_TAB_LO > x > _TAB_LO:
        return _lerp(_LOGSIG_TABLE, x)
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


@_compiled(fastmath=_FASTMATH)
def pair_step(
    w_in: np.ndarray, w_out: np.ndarray, a: int, rows: np.ndarray, lr: float, grad: np.ndarray,
    scores: np.ndarray,
) -> None:
    """One SGD step for input row ``a`` against ``rows[0]`` (positive) and ``rows[1:]``
    (negatives), in place; ``grad`` is float32 scratch of length dim. Every row is scored
    at the pair's start, u.v into ``scores[k]`` (``pair_loss`` turns them into the loss: with
    the loss computed in here, behind a flag, the steps that did not need it ran 10% slower);
    a row that comes twice (a negative drawn twice) takes the same gradient twice, as
    ``models.sgns.sgns_step`` does."""
    d = w_in.shape[1]
    for j in range(d):
        grad[j] = 0.0
    m = rows.shape[0]
    # Every score first, then the updates: the dot products are independent of each other
    # (the input row moves only at the end), so they overlap, where interleaved with the
    # updates each waited for the one before (12% of the learner's time).
    for k in range(m):
        r = rows[k]
        s = np.float32(0.0)
        for j in range(d):
            s += w_in[a, j] * w_out[r, j]
        scores[k] = s
    for k in range(m):
        r = rows[k]
        sig = sigmoid(float(scores[k]))
        g = np.float32((sig - 1.0) * lr) if k == 0 else np.float32(sig * lr)
        for j in range(d):
            grad[j] += g * w_out[r, j]
            w_out[r, j] -= g * w_in[a, j]
    for j in range(d):
        w_in[a, j] -= grad[j]


@_compiled()
def pair_loss(scores: np.ndarray, m: int) -> float:
    """-log s(u.v+) - sum log s(-u.v-) from a pair's ``m`` scores (the positive first)."""
    loss = -log_sigmoid(float(scores[0]))
    for k in range(1, m):
        loss -= log_sigmoid(-float(scores[k]))
    return loss


@_compiled()
def _mark(row: int, mask: np.ndarray, stack: np.ndarray, top: np.ndarray) -> None:
    if mask[row] == 0:
        mask[row] = 1
        stack[top[0]] = row
        top[0] += 1


@_compiled()
def keep_base(row: int, w_out: np.ndarray, counts: np.ndarray, slot: np.ndarray, b_rows: np.ndarray,
              b_out: np.ndarray, b_counts: np.ndarray, b_in_at: np.ndarray, b_top: np.ndarray) -> int:
    """Before ``row``'s output vector or count first changes after a share, copy them into
    the next free slot of the base buffers (``b_*[:b_top[0]]``): what they were when last
    shared. Returns the row's slot (a row that has one keeps it). The input vector gets a
    place of its own only when it changes (``keep_input``; ``b_in_at`` -1 until then): most
    rows a click moves are negatives, whose input vector it never touches. The caller checks
    that sharing is on (a non-empty ``slot``) and leaves room for every row one call can touch."""
    s = slot[row]
    if s >= 0:
        return s
    s = b_top[0]
    slot[row] = s
    b_rows[s] = row
    for j in range(w_out.shape[1]):
        b_out[s, j] = w_out[row, j]
    b_counts[s] = counts[row]
    b_in_at[s] = -1
    b_top[0] = s + 1
    return s


@_compiled()
def keep_input(row: int, w_in: np.ndarray, w_out: np.ndarray, counts: np.ndarray, slot: np.ndarray,
               b_rows: np.ndarray, b_out: np.ndarray, b_counts: np.ndarray, b_in_at: np.ndarray,
               b_in: np.ndarray, b_top: np.ndarray) -> None:
    """``keep_base``, and before ``row``'s input vector first changes, a copy of it at the
    next free place of ``b_in`` (``b_in[:b_top[1]]``), named by the slot's ``b_in_at``."""
    s = keep_base(row, w_out, counts, slot, b_rows, b_out, b_counts, b_in_at, b_top)
    if b_in_at[s] >= 0:
        return
    k = b_top[1]
    b_in_at[s] = k
    for j in range(w_in.shape[1]):
        b_in[k, j] = w_in[row, j]
    b_top[1] = k + 1


@_compiled()
def learn_click(
    w_in: np.ndarray,
    w_out: np.ndarray,
    counts: np.ndarray,
    target: int,
    ctx: np.ndarray,
    dist: np.ndarray,
    n_fresh: int,
    params: np.ndarray,
    ring_in: np.ndarray,
    ring_tg: np.ndarray,
    ring_sc: np.ndarray,
    ring_state: np.ndarray,
    replay_pairs: int,
    n_neg: int,
    pool: int,
    cum: np.ndarray,
    guide: np.ndarray,
    n_build: int,
    rng: np.ndarray,
    mask: np.ndarray,
    stack: np.ndarray,
    top: np.ndarray,
    slot: np.ndarray,
    b_rows: np.ndarray,
    b_out: np.ndarray,
    b_counts: np.ndarray,
    b_in_at: np.ndarray,
    b_in: np.ndarray,
    b_top: np.ndarray,
    p_in: np.ndarray,
    p_tg: np.ndarray,
    p_sc: np.ndarray,
    negs: np.ndarray,
    rows: np.ndarray,
    grad: np.ndarray,
    scores: np.ndarray,
) -> tuple[float, int]:
    """Count one click on ``target`` and train it from ``ctx[:n_fresh]`` (rows of the earlier
    items, at ``dist`` clicks back) plus ``replay_pairs`` pairs replayed from the ring, in place.

    ``params`` = (learning_rate, min_learning_rate, distance_power). ``ring_state`` =
    (pairs held, next slot). The replayed pairs are sampled before the fresh ones are pushed.
    ``pool`` > 0: ``pool`` negatives are drawn once for the click and each pair takes
    ``n_neg`` of them in turn (one that is the pair's own target is left out for that pair);
    0: each pair draws its own ``n_neg``.
    Output rows changed (and ``target``, whose count moved) are marked in ``mask`` and
    appended to ``stack[:top[0]]`` once each; every row written is first kept as it was in
    the base buffers (``keep_base``, and ``keep_input`` for an input vector), which model
    sharing takes its deltas against.
    Returns the summed loss of the click's fresh pairs, each taken before its step: the
    model's loss on data it has not learned yet (replayed pairs are not counted: they were
    learned before, and their logs cost a third of the learner's time); and the number of
    pairs stepped. (0.0, 0) when there was nothing to learn from (no replay either, as
    without context). The last seven arrays are scratch (``learn_clicks`` sizes them).
    """
    track = slot.shape[0] > 0
    if track and slot[target] < 0:
        keep_base(target, w_out, counts, slot, b_rows, b_out, b_counts, b_in_at, b_top)
    counts[target] += 1.0
    _mark(target, mask, stack, top)
    if n_fresh == 0:
        return 0.0, 0
    lr0 = params[0]
    min_lr = params[1]
    dpow = params[2]
    size = ring_in.shape[0]
    held = ring_state[0]
    n_rep = replay_pairs if (replay_pairs > 0 and held > 0) else 0
    n_pairs = n_fresh + n_rep
    for i in range(n_fresh):
        p_in[i] = ctx[i]
        p_tg[i] = target
        p_sc[i] = np.float32(dist[i] ** -dpow) if dpow != 0.0 else np.float32(1.0)
    for i in range(n_rep):
        pick = int(next_uniform(rng) * held)
        if pick >= held:
            pick = held - 1
        p_in[n_fresh + i] = ring_in[pick]
        p_tg[n_fresh + i] = ring_tg[pick]
        p_sc[n_fresh + i] = ring_sc[pick]
    if replay_pairs > 0:
        pos = ring_state[1]
        for i in range(n_fresh):
            ring_in[pos] = p_in[i]
            ring_tg[pos] = p_tg[i]
            ring_sc[pos] = p_sc[i]
            pos += 1
            if pos == size:
                pos = 0
        ring_state[1] = pos
        ring_state[0] = min(held + n_fresh, size)
    for k in range(pool):
        negs[k] = draw_one(cum, guide, n_build, rng)
    # Every row the click will step, asked for at once: the steps below then find them in
    # cache instead of waiting on each in turn.
    prefetch_row(w_out, target)
    for k in range(min(pool, n_pairs * n_neg)):
        prefetch_row(w_out, negs[k])
    for i in range(n_pairs):
        prefetch_row(w_in, p_in[i])
        if i >= n_fresh:
            prefetch_row(w_out, p_tg[i])
    # The pool rows the pairs will take (in turn from the first): kept for sharing before any
    # is written, and marked once, not once per pair that takes them.
    used = min(pool, n_pairs * n_neg)
    if track:
        for k in range(used):
            if slot[negs[k]] < 0:
                keep_base(negs[k], w_out, counts, slot, b_rows, b_out, b_counts, b_in_at, b_top)
    for k in range(used):
        _mark(negs[k], mask, stack, top)
    loss = 0.0
    turn = 0
    for i in range(n_pairs):
        a = p_in[i]
        t = p_tg[i]
        c = counts[a]
        lr = max(min_lr, lr0 / math.sqrt(c if c > 1.0 else 1.0))
        lr = float(np.float32(lr) * p_sc[i])
        rows[0] = t
        m = 1
        if pool > 0:
            for _ in range(n_neg):
                r = negs[turn]
                turn = turn + 1 if turn + 1 < pool else 0
                if r != t:
                    rows[m] = r
                    m += 1
        else:
            for _ in range(n_neg):
                r = draw_one(cum, guide, n_build, rng)
                if r == t:
                    r = draw_one(cum, guide, n_build, rng)
                rows[m] = r
                m += 1
        # Pool negatives were kept and marked above; per-pair draws (no pool) are done here.
        first = 1 if pool > 0 else m
        if track:  # the test first: a call with ten arrays costs more than the check
            if slot[a] < 0 or b_in_at[slot[a]] < 0:
                keep_input(a, w_in, w_out, counts, slot, b_rows, b_out, b_counts, b_in_at, b_in, b_top)
            for k in range(first):
                if slot[rows[k]] < 0:
                    keep_base(rows[k], w_out, counts, slot, b_rows, b_out, b_counts, b_in_at, b_top)
        pair_step(w_in, w_out, a, rows[:m], lr, grad, scores)
        if i < n_fresh:
            loss += pair_loss(scores, m)
        for k in range(first):
            _mark(rows[k], mask, stack, top)
    return loss, n_pairs


@_compiled()
def learn_clicks(
    w_in: np.ndarray, w_out: np.ndarray, counts: np.ndarray, targets: np.ndarray, ctx: np.ndarray,
    dist: np.ndarray, n_fresh: np.ndarray, params: np.ndarray, ring_in: np.ndarray, ring_tg: np.ndarray,
    ring_sc: np.ndarray, ring_state: np.ndarray, replay_pairs: int, n_neg: int, pool: int,
    cum: np.ndarray, guide: np.ndarray, n_build: int, rng: np.ndarray, mask: np.ndarray,
    stack: np.ndarray, top: np.ndarray, slot: np.ndarray, b_rows: np.ndarray, b_out: np.ndarray,
    b_counts: np.ndarray, b_in_at: np.ndarray, b_in: np.ndarray, b_top: np.ndarray, losses: np.ndarray,
    pairs: np.ndarray,
) -> None:
    """``learn_click`` for each click ``i`` in turn (target ``targets[i]``, earlier items
    ``ctx[i, :n_fresh[i]]`` at ``dist[i]``), writing its loss to ``losses[i]`` and its pair
    count to ``pairs[i]``. One call per batch: with a call per click, numba's dispatch of ~30
    arguments came on top of every click. The clicks share one set of scratch arrays."""
    most = ctx.shape[1] + max(replay_pairs, 0)  # learn_click reads replay_pairs <= 0 as none
    p_in = np.empty(most, dtype=np.int64)
    p_tg = np.empty(most, dtype=np.int64)
    p_sc = np.empty(most, dtype=np.float32)
    negs = np.empty(pool, dtype=np.int64)
    rows = np.empty(1 + n_neg, dtype=np.int64)
    grad = np.empty(w_in.shape[1], dtype=np.float32)
    scores = np.empty(1 + n_neg, dtype=np.float32)
    for i in range(targets.shape[0]):
        losses[i], pairs[i] = learn_click(
            w_in, w_out, counts, targets[i], ctx[i], dist[i], n_fresh[i], params, ring_in, ring_tg,
            ring_sc, ring_state, replay_pairs, n_neg, pool, cum, guide, n_build, rng, mask, stack,
            top, slot, b_rows, b_out, b_counts, b_in_at, b_in, b_top, p_in, p_tg, p_sc, negs, rows, grad,
            scores)


@_compiled()
def share_pass(b_rows: np.ndarray, b_out: np.ndarray, b_counts: np.ndarray, b_in_at: np.ndarray,
               b_in: np.ndarray, held: np.ndarray, slot: np.ndarray, lo: int, hi: int, w_in: np.ndarray,
               w_out: np.ndarray, counts: np.ndarray, min_drift: float, max_wait: int,
               rows: np.ndarray, d_in: np.ndarray, d_out: np.ndarray, d_counts: np.ndarray) -> int:
    """``ItemVectors.share`` over the base's slots ``lo`` to ``hi``, in one pass: each live
    slot's change (tables minus base, float32 as numpy subtracts) goes to the next free
    place of ``rows``/``d_in``/``d_out``/``d_counts`` when it is to be sent: it moved by
    more than ``min_drift`` of its base's size (both tables, relative L2; ``min_drift``
    <= 0: always), its count moved, or it has waited ``max_wait`` shares (> 0). A slot
    without an input base (``b_in_at`` -1) has the input vector it was kept with: its
    change there is zero. A sent slot is freed (its row -1 in ``b_rows`` and ``slot``: the
    tables are its base again); one kept back counts one more wait in ``held``. Returns how
    many were sent. numpy's version gathered, subtracted and reduced every slot's rows in
    separate passes: 93-134 ms a share at 1M items, where 50k-123k rows change each second.
    A slot's table rows are scattered over the tables, so the next slot's are asked for
    (``prefetch_row``) before this one's are read: 80k slots over 1M-row tables took 23 ms
    instead of 46 (scratch timing, the same with 1 to 32 slots ahead)."""
    dim = b_out.shape[1]
    m = 0
    if lo < hi and b_rows[lo] >= 0:
        prefetch_row(w_in, b_rows[lo])
        prefetch_row(w_out, b_rows[lo])
    for i in range(lo, hi):
        if i + 1 < hi and b_rows[i + 1] >= 0:
            prefetch_row(w_in, b_rows[i + 1])
            prefetch_row(w_out, b_rows[i + 1])
        r = b_rows[i]
        if r < 0:  # freed earlier in this pass
            continue
        k = b_in_at[i]
        moved = 0.0
        size = 0.0
        for j in range(dim):
            base_in = b_in[k, j] if k >= 0 else w_in[r, j]
            a = w_in[r, j] - base_in
            c = w_out[r, j] - b_out[i, j]
            d_in[m, j] = a
            d_out[m, j] = c
            x, y = np.float64(base_in), np.float64(b_out[i, j])
            moved += np.float64(a) * np.float64(a) + np.float64(c) * np.float64(c)
            size += x * x + y * y
        dc = counts[r] - b_counts[i]
        send = (min_drift <= 0.0 or np.sqrt(moved) > min_drift * (np.sqrt(size) + 1e-6) or dc != 0.0
                or (max_wait > 0 and held[i] >= max_wait))
        if send:
            rows[m] = r
            d_counts[m] = dc
            m += 1
            b_rows[i] = -1
            slot[r] = -1
        else:
            held[i] += 1
    return m


@_compiled()
def place_rows(slots: np.ndarray, hashes: np.ndarray, mask: int) -> None:
    """Put row ``r`` (as ``r + 1``) into the first empty slot from ``hashes[r] & mask`` on,
    probing linearly: ``Vocabulary``'s table, rebuilt whole when it grows. ``slots`` starts
    empty (0) and has room for every row."""
    for r in range(hashes.shape[0]):
        i = hashes[r] & mask
        while slots[i] != 0:
            i = (i + 1) & mask
        slots[i] = r + 1
