"""Item vectors learned online from sessions (item2vec / prod2vec with SGNS).

``ItemVectors`` owns the growing vocabulary and the two vector tables; ``learn`` trains one
click against the items before it in its session. The vocabulary grows in place (capacity
doubles), so a never-seen item can be learned and served at once without a restart.

One pass over a stream sees each transition once, which leaves rare transitions
under-trained compared with an offline model run for many epochs. A bounded replay buffer of
recent pairs gives every click a few extra SGD steps on pairs seen shortly before, in the
same compiled call (``models.kernels.learn_clicks``), so the learner stays online and
one-pass over the stream while each pair gets several (decaying-in-time) looks.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models import kernels
from models.sgns import FloatArray, IntArray, RowArray


@dataclass(frozen=True)
class Item2VecConfig:
    """Learning settings (constructor arguments are the settings)."""

    dim: int = 64
    window: int = 2
    negatives: int = 5
    negative_pool: int = 20
    """Negatives drawn once per click and shared by its pairs, ``negatives`` each in turn (0:
    each pair draws its own). Measured on the validation split (HR@20 / MRR@20, seeds 0 and
    1): .6734 / .6769 and .3694 / .3699 with a pool of 20, .6756 / .6762 and .3689 / .3689
    drawing per pair, at 1.3-1.5x the learner's speed."""
    learning_rate: float = 0.05
    min_learning_rate: float = 0.05
    """The rate decays per item as 1/sqrt(count) towards this floor. Equal to the rate by
    default: measured, a decaying rate leaves a one-pass learner under-trained."""
    power: float = 0.75
    """Negatives are drawn from counts**power (word2vec's smoothed unigram)."""
    distance_power: float = 0.0
    """A pair ``d`` clicks apart trains with rate * d**-distance_power (0: all pairs alike)."""
    learn_repeats: bool = True
    """Also train (a -> a) pairs when an item is clicked again in its session, so each item
    learns its own re-click propensity."""
    replay_pairs: int = 15
    """Extra pairs replayed from the buffer with each click (0: no replay). On the validation
    split (HR@20 / MRR@20, mean of seeds 0-2): 10 .6727 / .3677, 15 .6756 / .3693,
    20 .6762 / .3697, 25 .6771 / .3693; 15 is the cheapest point of that plateau."""
    replay_buffer: int = 20_000
    """How many recent pairs the replay buffer keeps."""
    seed: int = 0
    shared: bool = False
    """Keep what each row was when last shared, for the rows changed since (``SharedBase``),
    so that ``share`` can hand out what this model learned since, for other copies of the
    model to ``merge``."""


@dataclass(frozen=True)
class VectorDelta:
    """What one copy of the model learned since it last shared: per item, the change of its
    input vector, output vector and click count. Vectors start from a small random input
    vector and a zero output vector, and SGD only ever adds to them, so adding a delta to
    another copy adds the learning it carries (asynchronous SGD over shared tables)."""

    ids: list[str]
    d_in: FloatArray
    d_out: FloatArray
    d_counts: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, rows: int) -> list[VectorDelta]:
        """The same delta in pieces of at most ``rows`` items (messages have a size limit)."""
        return [VectorDelta(self.ids[i : i + rows], self.d_in[i : i + rows], self.d_out[i : i + rows],
                            self.d_counts[i : i + rows]) for i in range(0, len(self.ids), max(rows, 1))]


class Vocabulary:
    """Item id <-> row, with click counts; rows are never reused.

    An id's row is found through ``_table``: an array of row numbers plus one (0: empty),
    at most half full, probed linearly from the id's ``hash`` and checked against ``ids``.
    Not one ``dict``: at 1M ids a ``dict[str, int]`` held 60 MiB (its table and one int
    object per row) beside the ids themselves, the array 8-16 MiB. A probe from Python
    costs 450-670 ns at 1M ids against a dict's 300-380, and a click looks up every item of
    its session, so the ``recent`` ids found are also kept in a small dict (emptied when
    full; a row never changes, so it is never stale). ``hash`` is salted per process, so the
    table is never saved: ``ids`` is, and a restore rebuilds it. The table and its mask are
    one tuple, swapped whole when it grows, so a reader on another thread never probes a
    new table with the old mask.
    """

    def __init__(self, slots: int = 1024, recent: int = 65_536) -> None:
        if slots < 2 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two (at least 2), not {slots}")
        self.ids: list[str] = []
        self.counts = np.zeros(1024, dtype=np.float64)
        self.recent = recent
        self._recent: dict[str, int] = {}
        self._table: tuple[array.array[int], int] = (array.array("i"), 0)
        self._rehash(slots)  # through the compiled pass: a model built at start-up loads it

    def __len__(self) -> int:
        return len(self.ids)

    def slots(self) -> int:
        """The table's size (a power of two, at least twice the ids)."""
        return self._table[1] + 1

    def get(self, item_id: str) -> int | None:
        """The row of ``item_id``, or None if it is not known."""
        row = self._recent.get(item_id)
        if row is None:
            row, _ = self._find(item_id)
            if row is not None:
                self._remember(item_id, row)
        return row

    def add(self, item_id: str) -> tuple[int, bool]:
        """Row of ``item_id``, adding it if new; returns (row, was_new)."""
        row = self._recent.get(item_id)
        if row is not None:
            return row, False
        found, i = self._find(item_id)
        if found is not None:
            self._remember(item_id, found)
            return found, False
        row = len(self.ids)
        self.ids.append(item_id)
        slots, mask = self._table
        if 2 * len(self.ids) > mask + 1:
            self._rehash(2 * (mask + 1))
        else:
            slots[i] = row + 1
        if row >= len(self.counts):
            grown = np.zeros(len(self.counts) * 2, dtype=np.float64)
            grown[: len(self.counts)] = self.counts
            self.counts = grown
        self._remember(item_id, row)
        return row, True

    def _find(self, item_id: str) -> tuple[int | None, int]:
        """(row, slot) if ``item_id`` is in the table, else (None, the empty slot it would take)."""
        slots, mask = self._table
        ids = self.ids
        i = hash(item_id) & mask
        while True:
            r = slots[i]
            if not r:
                return None, i
            if ids[r - 1] == item_id:
                return r - 1, i
            i = (i + 1) & mask

    def _remember(self, item_id: str, row: int) -> None:
        if len(self._recent) >= self.recent:
            self._recent.clear()
        if self.recent > 0:
            self._recent[item_id] = row

    def _rehash(self, size: int) -> None:
        """A table of ``size`` (a power of two) slots holding every row, placed in one
        compiled pass (a loop here took about a second at 1M ids)."""
        slots = array.array("i", bytes(4 * size))
        hashes = np.fromiter(map(hash, self.ids), dtype=np.int64, count=len(self.ids))
        kernels.place_rows(np.frombuffer(slots, dtype=np.int32), hashes, size - 1)
        self._table = (slots, size - 1)


class UnigramSampler:
    """Draws negatives from counts**power over the counts seen so far.

    The cumulative table is rebuilt when the counts have moved enough since the last build
    (every ``max(rebuild_min, n_items / 8)`` observations), which keeps the cost per click
    constant amortised while the distribution tracks the stream; items seen since the last
    build are drawable from the next one on.
    """

    def __init__(self, power: float = 0.75, rebuild_min: int = 256) -> None:
        self.power = power
        self.rebuild_min = rebuild_min
        self._cum: npt.NDArray[np.float64] = np.zeros(0)
        self._guide: RowArray = np.zeros(1, dtype=np.int32)
        self._since = 0
        self._n_at_build = 0

    def observe(self, counts: npt.NDArray[np.float64], n_items: int, n: int = 1) -> None:
        self._since += n
        if self._since >= max(self.rebuild_min, n_items // 8) or self._n_at_build == 0:
            self.rebuild(counts, n_items)

    def rebuild(self, counts: npt.NDArray[np.float64], n_items: int) -> None:
        self._cum = kernels.smoothed_cumsum(counts, n_items, self.power)
        self._guide = kernels.guide_table(self._cum)
        self._since = 0
        self._n_at_build = n_items

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> IntArray:
        if self._n_at_build == 0 or self._cum[-1] <= 0:
            return np.zeros(shape, dtype=np.int64)
        u = rng.random(shape) * self._cum[-1]
        out: IntArray = np.searchsorted(self._cum, u, side="right").astype(np.int64)
        np.minimum(out, self._n_at_build - 1, out=out)
        return out


class ReplayBuffer:
    """The last ``size`` (input, target, rate scale) pairs, in a ring.

    ``state`` holds (pairs held, next slot) so the compiled learner can push and sample in
    place; ``n`` reads the first.
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.inputs = np.zeros(self.size, dtype=np.int64)
        self.targets = np.zeros(self.size, dtype=np.int64)
        self.scales = np.zeros(self.size, dtype=np.float32)
        self.state = np.zeros(2, dtype=np.int64)

    @property
    def n(self) -> int:
        return int(self.state[0])

    def push(self, inputs: IntArray, targets: IntArray, scales: FloatArray) -> None:
        for lo in range(0, len(inputs), self.size):
            i, t, s = inputs[lo : lo + self.size], targets[lo : lo + self.size], scales[lo : lo + self.size]
            idx = (int(self.state[1]) + np.arange(len(i))) % self.size
            self.inputs[idx], self.targets[idx], self.scales[idx] = i, t, s
            self.state[1] = (int(self.state[1]) + len(i)) % self.size
            self.state[0] = min(int(self.state[0]) + len(i), self.size)

    def sample(self, rng: np.random.Generator, m: int) -> tuple[IntArray, IntArray, FloatArray]:
        pick = rng.integers(0, self.n, size=m)
        return self.inputs[pick], self.targets[pick], self.scales[pick]


class SharedBase:
    """What each row changed since the last ``share`` was then: ``rows[:n]``, with their
    output vector and count at the same position of ``w_out`` and ``counts``, and their
    input vector at ``w_in[in_at[i]]`` if it changed too (-1: it did not, the table holds
    its base); ``slot`` maps a row to its position (-1: unchanged, the tables hold its base).

    Sparse because between two shares (about a second) a worker changes a small part of a
    large catalogue: a full copy of both tables and the counts cost as much memory as the
    model itself (545 MB at 1M items, dim 64). Input vectors have their own, smaller buffer
    because most rows a click moves are its negatives, which change only their output
    vector: with one slot for both, most input copies were of vectors nothing had touched
    (at the end of a 1M-item run, 6,028 of 65,641 waiting rows had an input copy to keep).
    Rows get a slot before they first change (``kernels.keep_base``/``keep_input``, called
    by the learner), and lose it when shared. ``enabled`` False (``tracking``): no slots at all.
    """

    def __init__(self, dim: int, rows: int, enabled: bool) -> None:
        self.tracking = enabled
        self.cap = self.in_cap = 1024 if enabled else 0
        self.slot: RowArray = np.full(rows if enabled else 0, -1, dtype=np.int32)
        self.rows = np.zeros(self.cap, dtype=np.int64)
        self.w_out: FloatArray = np.zeros((self.cap, dim), dtype=np.float32)
        self.counts = np.zeros(self.cap, dtype=np.float64)
        self.in_at = np.zeros(self.cap, dtype=np.int64)
        self.w_in: FloatArray = np.zeros((self.in_cap, dim), dtype=np.float32)
        self.top = np.zeros(2, dtype=np.int64)
        """Slots used, input places used."""
        self.held = np.zeros(self.cap, dtype=np.int64)
        """Shares each slot's row has been held back by the drift floor (0 for new slots)."""
        self.cursor = 0
        """Where a share in parts (``ItemVectors.share``'s ``limit``) goes on; 0: no pass begun."""
        self.end = 0
        """The slots a pass in parts looks at: those there when it began (the slots learning
        adds meanwhile wait for the next pass, or a pass could chase them for ever)."""
        self.arrays = self._arrays()
        """The arrays ``kernels.learn_clicks`` takes, in order (kept as one tuple: the learner
        passes them on every click)."""

    @property
    def n(self) -> int:
        return int(self.top[0])

    def grow_rows(self, rows: int) -> None:
        """The tables grew to ``rows`` rows (new rows are unchanged)."""
        if self.tracking and rows > len(self.slot):
            self.slot = np.concatenate([self.slot, np.full(rows - len(self.slot), -1, dtype=np.int32)])
            self.arrays = self._arrays()
            start = self._start()
            if start > self.cap or start > self.in_cap:
                self._resize(max(start, self.cap), max(start, self.in_cap))

    def _start(self) -> int:
        """The capacity a base keeps at least (``BASE_START``, at most a slot per row)."""
        return max(1024, min(len(self.slot), BASE_START))

    def reserve(self, extra: int) -> None:
        """Room for ``extra`` more slots and input places (the compiled learner cannot grow
        the buffers)."""
        cap = _doubled(self.cap, int(self.top[0]) + extra)
        in_cap = _doubled(self.in_cap, int(self.top[1]) + extra)
        if cap != self.cap or in_cap != self.in_cap:
            self._resize(cap, in_cap)

    def _resize(self, cap: int, in_cap: int) -> None:
        """The slot buffers to ``cap`` slots and the input buffer to ``in_cap`` places (the
        first ``n`` slots and the input places in use are kept). Only those are copied: the
        rest of a new buffer stays untouched zeros, which ``np.zeros`` maps without making
        them resident (a base growing with the tables to 131,072 slots copied 65,536 unused
        slots, 16 MiB in each vector buffer)."""
        n, used_in = int(self.top[0]), int(self.top[1])
        self.rows, self.counts = _grown(self.rows, cap, n), _grown(self.counts, cap, n)
        self.w_out, self.in_at = _grown(self.w_out, cap, n), _grown(self.in_at, cap, n)
        self.held = _grown(self.held, cap, n)
        self.w_in = _grown(self.w_in, in_cap, used_in)
        self.cap, self.in_cap = cap, in_cap
        self.arrays = self._arrays()

    def keep(self, rows: IntArray, w_in: FloatArray, w_out: FloatArray,
             counts: npt.NDArray[np.float64]) -> None:
        """``keep_input`` for many rows at once (before a direct write to the tables)."""
        if not self.tracking:
            return
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        new = rows[self.slot[rows] < 0]
        self.reserve(len(rows))
        lo = int(self.top[0])
        at = np.arange(lo, lo + len(new))
        self.slot[new], self.rows[at] = at, new
        self.w_out[at], self.counts[at], self.in_at[at] = w_out[new], counts[new], -1
        self.top[0] = lo + len(new)
        slots = self.slot[rows]
        bare = slots[self.in_at[slots] < 0]  # kept before with its output side only
        lo = int(self.top[1])
        self.in_at[bare] = np.arange(lo, lo + len(bare))
        self.w_in[lo : lo + len(bare)] = w_in[self.rows[bare]]
        self.top[1] = lo + len(bare)

    def add(self, rows: IntArray, d_in: FloatArray, d_out: FloatArray,
            d_counts: npt.NDArray[np.float64]) -> None:
        """Add a change to the base of those ``rows`` that have a slot (a change that reached
        both the tables and what was shared, such as another copy's delta). A slot without
        an input place needs nothing there: its input base is the table's row."""
        slots = self.slot[rows]
        mine = slots >= 0
        at = slots[mine]
        np.add.at(self.w_out, at, d_out[mine])
        np.add.at(self.counts, at, d_counts[mine])
        places = self.in_at[at]
        has = places >= 0
        np.add.at(self.w_in, places[has], d_in[mine][has])

    def compact(self) -> None:
        """Pack the live slots (those ``share`` did not free) and their input places to the
        front, in the order they were, at the end of a share's pass over them."""
        n, used = int(self.top[0]), int(self.top[1])
        idx = np.flatnonzero(self.rows[:n] >= 0)
        m = len(idx)
        self.rows[:m], self.counts[:m] = self.rows[idx], self.counts[idx]
        self.w_out[:m], self.held[:m] = self.w_out[idx], self.held[idx]
        places = self.in_at[idx]
        has = places >= 0
        k = int(has.sum())
        self.w_in[:k] = self.w_in[places[has]]
        places[has] = np.arange(k)
        self.in_at[:m] = places
        self.held[m:] = 0  # slots from m on are new at the next share
        self.slot[self.rows[:m]] = np.arange(m)
        self.top[:] = m, k
        self.cursor = 0
        # A burst (a long gap between shares) is over: judged by the slots this pass used,
        # not the few it keeps. Shrunk to twice what it kept, the buffers grew back by
        # doubling every second (a copy of up to 65k slots, 20-44 ms in one batch at 100k).
        floor = self._start()
        cap = self.cap if self.cap <= 4 * max(n, floor) else max(2 * n, floor)
        in_cap = self.in_cap if self.in_cap <= 4 * max(used, floor) else max(2 * used, floor)
        if cap != self.cap or in_cap != self.in_cap:
            self._resize(cap, in_cap)

    def live(self) -> npt.NDArray[np.bool_]:
        """Which of the first ``n`` slots hold a row (a share in parts frees slots as it goes)."""
        live: npt.NDArray[np.bool_] = self.rows[: self.n] >= 0
        return live

    def pending(self, w_in: FloatArray) -> tuple[IntArray, FloatArray, FloatArray, npt.NDArray[np.float64]]:
        """The rows with a slot and what they were when last shared: input vectors (those
        without an input place from ``w_in``, the table), output vectors and counts."""
        live = self.live()
        rows = self.rows[: self.n][live]
        places = self.in_at[: self.n][live]
        base_in = w_in[rows]
        has = places >= 0
        base_in[has] = self.w_in[places[has]]
        return rows, base_in, self.w_out[: self.n][live], self.counts[: self.n][live]

    def _arrays(self) -> tuple[RowArray, IntArray, FloatArray, npt.NDArray[np.float64], IntArray, FloatArray,
                               IntArray]:
        return self.slot, self.rows, self.w_out, self.counts, self.in_at, self.w_in, self.top


BASE_START = 131_072
"""Slots (and input places) a ``SharedBase`` starts with once the tables have that many rows
(fewer: one per row). ``np.zeros`` maps buffers this large without touching them, so slots
never used cost no resident memory; from 1,024, the buffers doubled 7 times in the first
30,000 clicks over 1M items, each copy 17 ms on average on the learner's call (3.9 µs a
click of ``bench core``'s 1M point), and each a stall for a worker's first clicks."""


def _doubled(cap: int, need: int) -> int:
    """``cap``, doubled until it holds ``need``."""
    cap = max(cap, 1)
    while cap < need:
        cap *= 2
    return cap


class ItemVectors:
    """The online item2vec model: vocabulary, input and output tables, and the learner.

    ``learn`` runs one compiled call per click (``models.kernels.learn_click``): the window's
    pairs and the replayed ones, each with its own negatives and its own sequential SGD step.
    Changed output rows are tracked in a byte mask plus a stack of row numbers (each row at
    most once), so the bookkeeping is bounded by the table size and costs no Python per row.
    """

    def __init__(self, config: Item2VecConfig | None = None) -> None:
        self.config = config or Item2VecConfig()
        self.vocab = Vocabulary()
        self.rng = np.random.default_rng(self.config.seed)
        """Initialises new input vectors (the kernels draw from ``_kernel_rng``)."""
        self._kernel_rng = kernels.seed_state(self.config.seed)
        self.sampler = UnigramSampler(self.config.power)
        self.replay = ReplayBuffer(self.config.replay_buffer)
        cap = 1024
        self.w_in: FloatArray = np.zeros((cap, self.config.dim), dtype=np.float32)
        self.w_out: FloatArray = np.zeros((cap, self.config.dim), dtype=np.float32)
        self.updates = 0
        """SGD pair updates applied so far."""
        self.version = 0
        """Bumped on every change to the tables (the model version published with suggestions)."""
        self.loss_ema = 0.0
        self._dirty_mask = np.zeros(cap, dtype=np.uint8)
        self._dirty_rows: RowArray = np.zeros(cap, dtype=np.int32)
        self._dirty_top = np.zeros(1, dtype=np.int64)
        self._base = SharedBase(self.config.dim, cap, self.config.shared)
        """``shared``: what the rows changed since the last ``share`` were then."""
        self._base_room = 1 + (self.config.window + self.config.replay_pairs) * (2 + self.config.negatives)
        """The most rows one ``learn`` can change: each pair its input, target and negatives."""
        self._params = np.array([self.config.learning_rate, self.config.min_learning_rate,
                                 self.config.distance_power], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def changed(self) -> int:
        """How many rows changed since the last ``take_dirty`` (none pending: 0)."""
        return int(self._dirty_top[0])

    def _grow(self, need: int) -> None:
        cap = _doubled(self.w_in.shape[0], need)
        if cap == self.w_in.shape[0]:
            return
        self.w_in, self.w_out = _grown(self.w_in, cap), _grown(self.w_out, cap)
        self._dirty_mask = _grown(self._dirty_mask, cap)
        self._dirty_rows = _grown(self._dirty_rows, cap)
        self._base.grow_rows(cap)

    def upsert(self, item_id: str) -> int:
        """Row of ``item_id``; a new item gets a small random input vector and a zero output vector."""
        row, new = self.vocab.add(item_id)  # one probe: a lookup first probed a new id twice
        if new:
            self._start_rows(row, row + 1)
        return row

    def _start_rows(self, lo: int, hi: int) -> None:
        """Room for the new rows ``lo:hi`` and their random input vectors, drawn in one call:
        one draw per new item was a third of what learning cost on a stream of new items."""
        self._grow(hi)
        d = self.config.dim
        # Each copy draws its own start: not learning, so not shared (no base slot).
        self.w_in[lo:hi] = (self.rng.random((hi - lo, d), dtype=np.float32) - 0.5) / d

    def row(self, item_id: str) -> int | None:
        return self.vocab.get(item_id)

    def learn(self, item_id: str, context: tuple[str, ...] | list[str]) -> float:
        """Train the click on ``item_id`` against the items before it (last ``window`` of them).

        Each (earlier -> this) pair gets one SGD step against negatives, followed by
        ``replay_pairs`` pairs replayed from the buffer. Returns the summed loss of the
        click's own (not replayed) pairs, each taken just before its step: the loss on data
        the model has not learned yet (0.0 when there was nothing to learn from).
        """
        return float(self.learn_many([(item_id, context)])[0])

    def learn_many(self, clicks: Sequence[tuple[str, Sequence[str]]]) -> npt.NDArray[np.float64]:
        """``learn`` for each (item, context) in turn, in one compiled call; returns each
        click's loss. The negatives table is rebuilt, when due, after the whole batch (a
        click's own count is in the table from the next rebuild on, as with ``learn``)."""
        cfg = self.config
        n = len(clicks)
        window = cfg.window
        w = max(window, 1)
        # Plain lists, turned into arrays once: a numpy element write costs more than a list
        # append, and this loop is most of what a click costs outside the compiled call.
        targets: list[int] = []
        ctx: list[int] = []
        dist: list[int] = []
        fresh: list[int] = []
        repeats = cfg.learn_repeats
        get, add = self.vocab.get, self.vocab.add
        known = len(self.vocab)
        pads = [[0] * (w - p) for p in range(w + 1)]
        try:
            for item_id, context in clicks:
                t = get(item_id)
                if t is None:
                    t = add(item_id)[0]
                targets.append(t)
                back = min(len(context), window)
                p = 0
                for c in context[-back:] if back else ():
                    if repeats or c != item_id:
                        r = get(c)
                        if r is None:
                            r = add(c)[0]
                        ctx.append(r)
                        dist.append(back)
                        p += 1
                    back -= 1
                ctx.extend(pads[p])
                dist.extend(pads[p])
                fresh.append(p)
        finally:
            # Even when a click fails here (a malformed one), the ids it and the clicks before
            # it added get their rows and start vectors: the caller may learn them alone next,
            # and rows are never reused, so the new ones follow the known ones.
            if len(self.vocab) > known:
                self._start_rows(known, len(self.vocab))
        n_fresh = np.array(fresh, dtype=np.int64)
        base = self._base
        if base.tracking:
            base.reserve(n * self._base_room)
        sampler, replay = self.sampler, self.replay
        losses = np.zeros(n, dtype=np.float64)
        pairs = np.zeros(n, dtype=np.int64)
        kernels.learn_clicks(
            self.w_in, self.w_out, self.vocab.counts, np.array(targets, dtype=np.int64),
            np.array(ctx, dtype=np.int64).reshape(n, w), np.array(dist, dtype=np.float64).reshape(n, w),
            n_fresh, self._params,
            replay.inputs, replay.targets, replay.scales, replay.state, cfg.replay_pairs,
            cfg.negatives, cfg.negative_pool, sampler._cum, sampler._guide, sampler._n_at_build,
            self._kernel_rng, self._dirty_mask, self._dirty_rows, self._dirty_top, *base.arrays,
            losses, pairs,
        )
        # After the clicks are counted: a rebuild of the negatives table includes them.
        sampler.observe(self.vocab.counts, len(self.vocab.ids), n)
        learned = pairs > 0
        m = int(learned.sum())
        if m:
            pair_loss = losses[learned] / n_fresh[learned]
            if self.updates == 0:  # the first click that learned starts the average
                self.loss_ema = float(pair_loss[0])
                pair_loss = pair_loss[1:]
            k = len(pair_loss)
            # The exponential average of each click's pair loss in turn, in closed form.
            decay = 0.99 ** np.arange(k - 1, -1, -1)
            self.loss_ema = float(0.99**k * self.loss_ema + (0.01 * decay * pair_loss).sum())
            self.updates += int(pairs.sum())
            self.version += m
        return losses

    def will_write(self, rows: IntArray, share: bool = True) -> None:
        """Call *before* writing ``rows`` of the tables or counts directly: their change then
        reaches the index at the next ``take_dirty`` and, with ``share``, the other copies at
        the next ``share`` (without: a state every copy already has, such as a preload; a
        row with a pending change of its own still sends the write with it)."""
        if share:
            self._base.keep(rows, self.w_in, self.w_out, self.vocab.counts)
        self._mark_for_index(rows)

    def _mark_for_index(self, rows: IntArray) -> None:
        for r in np.unique(np.asarray(rows, dtype=np.int64)).tolist():
            if not self._dirty_mask[r]:
                self._dirty_mask[r] = 1
                self._dirty_rows[int(self._dirty_top[0])] = r
                self._dirty_top[0] += 1

    def take_dirty(self) -> IntArray:
        """Rows whose index key may have changed since the last call, sorted: output vectors
        moved by SGD, and clicked items (their count moved). Rows whose only change is the
        input vector are left out (the index holds output vectors and counts only). An
        array, not a list: after a restore it holds every row (1M Python ints: 44 MB)."""
        n = int(self._dirty_top[0])
        rows = np.sort(self._dirty_rows[:n]).astype(np.int64)
        self._dirty_mask[rows] = 0
        self._dirty_top[0] = 0
        return rows

    # -- sharing between copies of the model (several workers) ------------------------------
    def share(self, min_drift: float = 0.0, max_wait: int = 0, limit: int = 0) -> VectorDelta:
        """What this copy learned since its last ``share``, for the others to ``merge``.

        Rows whose vectors moved by at most ``min_drift`` (relative L2, both tables) and whose
        count did not move stay pending: their change accumulates and goes out once it is
        large enough, so nothing learned is dropped, and the many tiny moves negative
        sampling makes do not each cost a row in every message. A row held back by
        ``max_wait`` shares goes out anyway (0: no limit): the rows negatives nudge now and
        then would otherwise pile up in the base (27k of 100k items after 60k clicks, and
        growing), and the others would not see their change.

        ``limit`` > 0: look at no more than this many changed rows, from where the last call
        stopped; the call that reaches the last row changed when the pass began ends it
        (``sharing``: False again). Learning may go on between calls: a row sent and changed
        again is sent by the next pass. At 1M items a whole share held the worker's event
        loop 80-92 ms.
        """
        base = self._base
        if not base.tracking:
            raise ValueError("share needs Item2VecConfig(shared=True)")
        dim, lo = self.config.dim, base.cursor
        if lo == 0:
            base.end = base.n
        end = base.end
        hi = end if limit <= 0 else min(end, lo + limit)
        # Rows in the order they first changed (merging adds, so order does not matter); the
        # base is read in place, and what is sent is packed to the front of the delta.
        size = hi - lo
        rows = np.empty(size, dtype=np.int64)
        d_in = np.empty((size, dim), dtype=np.float32)
        d_out = np.empty((size, dim), dtype=np.float32)
        d_counts = np.empty(size, dtype=np.float64)
        m = kernels.share_pass(base.rows, base.w_out, base.counts, base.in_at, base.w_in, base.held,
                               base.slot, lo, hi, self.w_in, self.w_out, self.vocab.counts, min_drift,
                               max_wait, rows, d_in, d_out, d_counts)
        base.cursor = hi
        if hi >= end:
            base.compact()  # keeps the slots added since the pass began, for the next one
        return VectorDelta(self.item_ids(rows[:m]), d_in[:m], d_out[:m], d_counts[:m].astype(np.float32))

    @property
    def sharing(self) -> bool:
        """Whether a share in parts has begun a pass it has not ended."""
        return self._base.cursor > 0

    @property
    def unshared(self) -> int:
        """Rows with a change this copy has not shared yet, held-back ones included (an
        upper bound while a share in parts is under way: the rows it sent are counted until
        it ends). What the base keeps for them is what sharing costs in memory."""
        return self._base.n

    def merge(self, delta: VectorDelta) -> IntArray:
        """Add another copy's learning (``share``'s output) to this one; returns its rows.

        Added to both the tables and the shared copy, so it is never sent back, while what
        this copy learned and has not shared yet stays pending. New items are added.
        """
        if delta.d_in.shape[1:] != (self.config.dim,) or delta.d_out.shape != delta.d_in.shape:
            raise ValueError(f"delta has shape {delta.d_in.shape}, the model dim {self.config.dim}")
        if not (len(delta.ids) == len(delta.d_in) == len(delta.d_counts)):
            raise ValueError("delta ids, vectors and counts differ in length")
        if not (np.isfinite(delta.d_in).all() and np.isfinite(delta.d_out).all()
                and np.isfinite(delta.d_counts).all()):
            raise ValueError("delta holds a non-finite value")
        rows = np.fromiter((self.upsert(i) for i in delta.ids), dtype=np.int64, count=len(delta.ids))
        counts = delta.d_counts.astype(np.float64)
        # add.at: a repeated id adds twice, like two deltas.
        for table, d in ((self.w_in, delta.d_in), (self.w_out, delta.d_out), (self.vocab.counts, counts)):
            np.add.at(table, rows, d)
        if self._base.tracking:  # rows with a pending change of their own: their base moves too
            self._base.add(rows, delta.d_in, delta.d_out, counts)
        self.vocab.counts[rows] = np.maximum(self.vocab.counts[rows], 0.0)
        self.sampler.observe(self.vocab.counts, len(self), max(1, int(counts.sum())))
        self._mark_for_index(rows)  # not news to share: it came from the others
        self.version += 1
        return rows

    def state(self, copy: bool = True) -> dict[str, npt.NDArray[Any]]:
        """What learning needs to go on where it stopped, as plain arrays (a snapshot; no
        pickle: ids are UTF-8 bytes plus offsets). ``copy`` False: the tables as views, for
        a caller whose memory nothing else changes (a forked writer)."""
        n = len(self)
        own = np.copy if copy else np.asarray
        encoded = [i.encode() for i in self.vocab.ids]
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded], dtype=np.int64)
        return {
            "dim": np.array([self.config.dim], dtype=np.int64),
            "ids": np.frombuffer(b"".join(encoded), dtype=np.uint8),
            "id_offsets": offsets,
            "counts": own(self.vocab.counts[:n]),
            "w_in": own(self.w_in[:n]),
            "w_out": own(self.w_out[:n]),
            "replay_inputs": self.replay.inputs.copy(),
            "replay_targets": self.replay.targets.copy(),
            "replay_scales": self.replay.scales.copy(),
            "replay_state": self.replay.state.copy(),
            "kernel_rng": self._kernel_rng.copy(),
            "sampler_cum": self.sampler._cum.copy(),
            "sampler_guide": self.sampler._guide.copy(),
            "sampler_meta": np.array([self.sampler._since, self.sampler._n_at_build], dtype=np.int64),
            "progress": np.array([self.updates, self.version], dtype=np.int64),
            "loss_ema": np.array([self.loss_ema], dtype=np.float64),
            **({} if not self._base.tracking else dict(zip(
                ("shared_rows", "shared_rows_in", "shared_rows_out", "shared_rows_counts"),
                self._base.pending(self.w_in), strict=True))),
        }

    def restore(self, state: dict[str, npt.NDArray[Any]]) -> None:
        """Load a ``state()`` into this fresh model (same dimension); every row is reported
        changed, so the next refresh indexes them all."""
        if len(self):
            raise ValueError("restore needs a fresh model")
        if int(state["dim"][0]) != self.config.dim:
            raise ValueError(f"snapshot has dim {int(state['dim'][0])}, the model {self.config.dim}")
        raw, offsets = state["ids"].tobytes(), state["id_offsets"]
        ids = [raw[offsets[i] : offsets[i + 1]].decode() for i in range(len(offsets) - 1)]
        n = len(ids)
        for item in ids:
            self.vocab.add(item)
        self._grow(n)
        self.vocab.counts[:n] = state["counts"]
        self.w_in[:n], self.w_out[:n] = state["w_in"], state["w_out"]
        if len(state["replay_inputs"]) == self.replay.size:
            self.replay.inputs[:] = state["replay_inputs"]
            self.replay.targets[:] = state["replay_targets"]
            self.replay.scales[:] = state["replay_scales"]
            self.replay.state[:] = state["replay_state"]
        self._kernel_rng[:] = state["kernel_rng"]
        self.updates, self.version = (int(x) for x in state["progress"])
        self.loss_ema = float(state["loss_ema"][0])
        self.rng = np.random.default_rng([self.config.seed, self.version])
        # The negatives table as it was (rebuilt on its own schedule), for an exact continuation.
        # (A snapshot from before int32 row numbers has an int64 guide.)
        self.sampler._cum = state["sampler_cum"].copy()
        self.sampler._guide = state["sampler_guide"].astype(np.int32)
        self.sampler._since, self.sampler._n_at_build = (int(x) for x in state["sampler_meta"])
        self._mark_for_index(np.arange(n))
        if self._base.tracking:
            # Go on from what was shared: learning this copy had not shared yet is dropped
            # here (the deltas it published after the snapshot bring back what reached the
            # topic), so nothing is counted twice.
            if "shared_rows" in state:
                rows = state["shared_rows"]
                self.w_in[rows], self.w_out[rows] = state["shared_rows_in"], state["shared_rows_out"]
                self.vocab.counts[rows] = state["shared_rows_counts"]
            elif "shared_in" in state:  # a snapshot from before the sparse base: full tables
                self.w_in[:n], self.w_out[:n] = state["shared_in"], state["shared_out"]
                self.vocab.counts[:n] = state["shared_counts"]
            else:  # a model that never shared: all of it is news to the others
                zero = np.zeros((n, self.config.dim), dtype=np.float32)
                every = np.arange(n)
                self._base.keep(every, zero, zero, np.zeros(n))

    def item_ids(self, rows: npt.NDArray[np.int64] | list[int]) -> list[str]:
        ids = self.vocab.ids
        return [ids[r] for r in np.asarray(rows, dtype=np.int64).tolist()]


def _grown(a: npt.NDArray[Any], cap: int, used: int | None = None) -> npt.NDArray[Any]:
    """``a`` with its first axis zero-padded (or cut) to ``cap`` rows; with ``used``, only
    its first ``used`` rows are copied (the rest of ``a`` is zeros)."""
    out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
    keep = min(len(a), cap, len(a) if used is None else used)
    out[:keep] = a[:keep]
    return out
