"""An HNSW index (hnswlib) over item vectors that keeps up with a model learning online.

Concurrency rule (hnswlib's own: ``add_items``/``resize_index`` must never overlap
``knn_query`` on the same index): every hnswlib call on a live graph happens while holding
``self._lock``. Writers (``write``/``refresh``) may run on one background thread, holding
the lock for ``write_chunk`` points at a time; a query waits for that chunk, or, given
``fallback`` (the caller's current vectors), answers by exact search over them instead of
waiting. No query ever runs concurrently with a write, and none waits for a whole write.

Vectors change on every click, but writing a point costs far more than a query, so
``refresh`` writes only the rows that moved by more than ``drift_tol`` (relative L2) since
they were last indexed, plus every new row. Candidates are re-scored against the current
vectors by the caller, so small drifts cost nothing in ranking quality.

A changed vector is written as a *new* hnswlib element and the old element is marked
deleted, instead of updated in place: hnswlib's in-place update repairs the neighbourhood of
the point and measured 15-20x slower than an insertion. Deleted elements stay in the graph
as routing nodes; once they outnumber ``compact_ratio`` times a graph's live ones, that
graph is rebuilt from the indexed vectors on the writer's thread, off the lock, and swapped in.

A band with few elements has no hnswlib graph at all: it keeps its vectors in an array and
answers by exact products (``exact_below``), which costs less than a walk at that size,
and a write to it is an array copy instead of an hnswlib insertion. Past that size a band
keeps (or gets) a graph only while its queries would cost more to score exactly than the
graph's walks and inserts cost (``scan_per_walk``, ``scan_per_insert``, from the band's own
counts: with norm-range pruning most queries never ask the small-norm bands); a graph is
built, like a compaction, off the lock, and swapped in.

Inner-product search (``mips``, the default) is split by vector norm into bands (norm
ranging, Yan et al., NeurIPS 2018): band ``b`` holds the vectors with norm in
``(floor * ratio**(b-1), floor * ratio**b]``, in its own graph, searched as L2 over vectors
lifted to the band's top norm (see ``_lift``); a query asks every band and keeps the best
by inner product. Each norm band is split again by the norm of its vectors without their last
coordinate (head bands, ``_band_of``): the recommender's keys end in log(1 + clicks), and a
query skips the bands none of whose vectors could beat what it keeps (``_asking``).
One lift over all items measured recall@20 0.55-0.65 against exact search
on learned item vectors whose norms span 0.7-9.5 (any ef up to 400): the lift coordinate
crowds most points near one pole. Per band the lift is small and recall was 0.95-0.99
(``sessionrec bench core``). Bands also have fixed radii, so a growing norm moves a vector
to another band instead of forcing a rebuild of everything.

A small index has one band (``one_band_below``): while it holds a few thousand vectors, the
calls a query makes per band (a bound check, a BLAS product, a compiled pass) cost more
than the products that skipping bands saves (one array scanned at once answered a single
query in about half the time). Past that size its vectors are written to their norm bands
once, and merged back into one band if the bands are seen to prune nothing
(``one_band_scan``) while they are all arrays.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import hnswlib
import numpy as np
import numpy.typing as npt

from models import topk
from models.sgns import FloatArray, IntArray


class Table(Protocol):
    """Rows of vectors by row number: an array, or a view that builds the rows asked."""

    def __getitem__(self, rows: IntArray, /) -> FloatArray: ...


@dataclass(frozen=True)
class IndexConfig:
    space: str = "mips"
    """``ip`` (hnswlib's inner product, what the scorer ranks by), ``mips`` (inner product
    searched as L2 over vectors lifted per norm band) or ``cosine``."""
    m: int = 16
    ef_construction: int = 40
    ef: int = 100
    band_ratio: float = 1.5
    """``mips``: the largest norm in a band over the smallest (smaller: more bands, each
    query asks all of them; measured 1.25 / 1.5 / 2: recall .97 / .95 / .91 at ef 100)."""
    band_floor: float = 1.0
    """``mips``: the first band holds every vector with norm up to this."""
    one_band_below: int = 8_192
    """``mips``: while the index would hold at most this many live vectors, all of them are in
    one array band, scanned whole by every query; the write that would take it past this
    puts every vector in its norm band (a write of them all, once). Measured on this
    machine (dim 64, sessions of a synthetic stream as queries, answers identical): at
    2.7k-7.8k learned vectors one scan took 0.45-0.51x the time of the norm bands' 8-15
    arrays for one query, 0.64-0.68x for 4 and 0.77-1.03x for 64; at 11.1k vectors of a
    preloaded catalogue (small random ones, which the norm bands prune better) 0.54x for one
    but 1.16-1.34x for 16 to 64. At most ``exact_below``; 0: norm bands from the first
    vector."""
    one_band_scan: float = 0.95
    """``mips``: norm bands that are all arrays, with at most ``exact_below`` vectors in all,
    are merged into one band once their queries (256 each at least) scanned this share of
    the vectors or more: bands that prune that little cost more than one scan (their calls
    per band). The band then holds until the index passes ``exact_below``. At 9.8k and
    13.9k learned vectors the bands scanned 0.99 and 0.98 of them, and one scan took
    0.53-0.86x and 0.57-0.78x the time (1 to 64 queries); a preloaded catalogue's 11.1k
    scanned 0.89, and one scan was slower there for 16 queries or more. 0: never."""
    exact_below: int = 16_384
    """A band with at most this many elements (live and deleted) has no hnswlib graph: it is
    searched by exact products over its vectors, and written by copying them. Past it the
    band's graph is built (off the lock); a rebuilt band goes back to exact search when at
    most half this many vectors are live. Not for ``cosine`` (always graphs)."""
    scan_per_insert: float = 10_000.0
    """A band past ``exact_below`` keeps a graph only while the vectors its queries would
    score exactly outnumber this many times the vectors written to it. Side by side on this
    machine (dim 64, one thread, random vectors), an hnswlib insert cost 70-180 us at
    16k-262k elements and a screened exact product (``_screen``) 3-12 ns: 6,000-65,000
    products per insert (learned vectors insert faster: 19-61 us at 12k-74k). With
    norm-range pruning most queries never ask the small-norm bands, which hold most
    vectors and take most writes: on the bench's 100k catalogue the largest band (63k) was
    asked by 5% of queries and took 2.4 writes per click. Judged from the band's own counts
    once it has seen 256 queries and 256 writes: a graph turns exact when it scores under
    half the threshold (a copy), an array turns into a graph (a build) when its scans
    outweigh the writes plus the build's own inserts (``_array_pays``). Until then, and
    for a bulk write (a restore, a preload, which comes before any query), a band is an
    array. 0 (or ``exact_below`` 0): size alone decides."""
    scan_per_walk: float = 32_768.0
    """What one query's walk of a graph costs, in vectors scored exactly: a band pays for a
    graph only with the vectors its queries would score past this many (times 1 + deleted /
    live for a graph: with as many deleted as live, walks measured 2-4x as long). Walks are
    not free: at the end of ``bench core``'s 1M-click stream two learned bands of 22k and
    26k walked in 90 and 60-360 us a query (k 64, ef 100), where a screen costs 2.4-3.2 ns a
    vector (20k-28k vectors a walk, and more with deletes); random unit vectors of 16k-262k
    walked as 22k-160k. Counted free, both bands took graphs, and the index answered in 489
    us a query against 142 us with every band an array (the same queries, replayed;
    recall@20 .942 against .950). 0: walks counted free."""
    drift_tol: float = 0.05
    """Rewrite a row once it moved by more than this (relative L2). Small for callers that
    rank by the index's answer as is; a caller that re-scores the candidates against the
    current vectors (the recommender) can afford more: see ``Settings.index_drift_tol``."""
    compact_ratio: float = 1.0
    """Rebuild a graph when its deleted elements exceed this many times its live ones."""
    seed: int = 0
    initial_capacity: int = 1024
    bulk_threads: int = 0
    """Threads for a write of at least ``bulk_rows`` points (a preload, a restore that
    rebuilds the index, a compaction): hnswlib inserts in parallel, so a rebuild at 1M
    items takes a fraction of the time (0: every core). Smaller writes use one thread:
    splitting a few hundred inserts costs more than it saves."""
    bulk_rows: int = 10_000
    bulk_piece: int = 65_536
    """Rows handled at once by a bulk write, a compaction or ``select_stale``: bounds their
    temporaries (a few copies of the rows in hand: tens of MB) whatever the write's size.
    At 1M items one piece of everything peaked 280 MB above the index it built."""
    write_chunk: int = 64
    """Points written per hold of the lock (smaller writes): the longest a query waits for
    a write running on another thread is about one chunk of inserts."""


class _Graph:
    """One band: an hnswlib graph, or (``exact``) its vectors in an array searched by exact
    products, with its label <-> row maps (labels are never reused)."""

    def __init__(self, dim: int, config: IndexConfig, capacity: int, radius: float,
                 saved: npt.NDArray[np.uint8] | None = None, exact: bool = False) -> None:
        lifted = config.space == "mips"
        self.dim = dim
        self.radius = radius
        """Every vector written to the graph is lifted to this norm (``mips``)."""
        self.limit = max(config.exact_below, capacity)
        """An ``exact`` band past this many elements is due for its graph-or-not decision."""
        self.queries = 0
        """Queries made while this band was live, those that asked it (norm-range pruning
        skips the rest), and vectors written to it: what ``VectorIndex._array_pays`` weighs."""
        self.asked = 0
        self.written = 0
        self.hnsw: hnswlib.Index | None = None
        """None while the band is ``exact``."""
        self.vecs: FloatArray | None = None
        """Label -> the vector as given (not lifted): what an ``exact`` band is searched by."""
        self.norm_max = 0.0
        """No vector written to the band is longer (what bounds the rounding of a screening
        product, ``_screen``)."""
        self.head_max = 0.0
        """No vector written to the band is longer without its last coordinate; and its last
        coordinates lie within ``[last_lo, last_hi]``: with them a query bounds what the band
        can score more tightly than its radius does (``VectorIndex._asking``)."""
        self.last_lo = math.inf
        self.last_hi = -math.inf
        if exact:
            self.vecs = np.zeros((capacity, dim), dtype=np.float32)
        else:
            self.hnsw = hnswlib.Index(space="l2" if lifted else config.space, dim=dim + lifted)
            if saved is None:
                self.hnsw.init_index(
                    max_elements=capacity,
                    ef_construction=config.ef_construction,
                    M=config.m,
                    random_seed=config.seed,
                )
            else:  # hnswlib reads its own file back (``save_index``), deleted marks included
                fd, path = tempfile.mkstemp(prefix="sessionrec-hnsw-")
                os.close(fd)
                try:
                    saved.tofile(path)
                    self.hnsw.load_index(path, max_elements=capacity)
                finally:
                    os.unlink(path)
            self.hnsw.set_ef(config.ef)
            self.hnsw.set_num_threads(1)
        self.bulk = (config.bulk_rows, config.bulk_threads or len(os.sched_getaffinity(0)))
        self.row_of_label = np.full(capacity, -1, dtype=np.int64)
        self.next_label = 0
        self.high = 0
        """Labels an ``exact`` band's array has held (its resident part: pages past them
        were never written, ``_room``)."""
        self.deleted = 0
        self.live = 0

    @property
    def exact(self) -> bool:
        return self.hnsw is None

    def state(self, prefix: str, copy: bool = True) -> dict[str, npt.NDArray[Any]]:
        """This band as arrays: hnswlib's own serialisation (``save_index``) as bytes, or the
        vectors of an ``exact`` band, and the label maps (``copy`` False: views). Caller
        holds the index lock."""
        own = np.copy if copy else np.asarray
        n = self.next_label
        meta = np.array([n, self.deleted, self.live, len(self.row_of_label)], dtype=np.int64)
        out: dict[str, npt.NDArray[Any]] = {
            prefix + "rows": own(self.row_of_label[:n]), prefix + "meta": meta,
            prefix + "radius": np.array([self.radius])}
        if self.hnsw is None:
            assert self.vecs is not None
            out[prefix + "vecs"] = own(self.vecs[:n])
            return out
        fd, path = tempfile.mkstemp(prefix="sessionrec-hnsw-")
        os.close(fd)
        try:
            self.hnsw.save_index(path)
            out[prefix + "graph"] = np.fromfile(path, dtype=np.uint8)
        finally:
            os.unlink(path)
        return out

    @classmethod
    def load(cls, dim: int, config: IndexConfig, state: dict[str, npt.NDArray[Any]], prefix: str) -> _Graph:
        """The band ``state(prefix)`` saved."""
        n, deleted, live, cap = (int(x) for x in state[prefix + "meta"])
        exact = prefix + "graph" not in state
        g = cls(dim, config, cap, float(state[prefix + "radius"][0]), saved=state.get(prefix + "graph"),
                exact=exact)
        g.row_of_label[:n] = state[prefix + "rows"]
        if g.vecs is not None:
            g.vecs[:n] = state[prefix + "vecs"]
            g.vecs[: n][g.row_of_label[:n] < 0] = 0.0  # saved before deletes zeroed them
        g.next_label, g.high, g.deleted, g.live = n, n, deleted, live
        return g

    def note(self, vecs: FloatArray) -> None:
        """Widen the band's bounds (``norm_max``, ``head_max``, ``last_lo``/``last_hi``) to
        take ``vecs`` (as given, not lifted). Deleting never narrows them: they stay bounds.
        One compiled pass (``topk.extremes``): numpy's version cost 44 us per write chunk."""
        if len(vecs) == 0:
            return
        sq_max, head_sq_max, lo, hi = topk.extremes(vecs)
        self.norm_max = max(self.norm_max, math.sqrt(sq_max))
        self.head_max = max(self.head_max, math.sqrt(head_sq_max))
        self.last_lo = min(self.last_lo, lo)
        self.last_hi = max(self.last_hi, hi)

    def narrow(self, parts: Iterable[FloatArray]) -> None:
        """Bounds made those of exactly the vectors in ``parts`` (every vector the band keeps,
        a piece at a time), after a compaction or a load: ``note`` only widens them."""
        self.norm_max = self.head_max = 0.0
        self.last_lo, self.last_hi = math.inf, -math.inf
        for vecs in parts:
            self.note(vecs)

    def reserve(self, need: int) -> None:
        """Room for ``need`` elements in all (capacity doubles, as a ``list`` grows)."""
        cap = len(self.row_of_label)
        if need > cap:
            while cap < need:
                cap *= 2
            if self.hnsw is not None:
                self.hnsw.resize_index(cap)
            else:
                assert self.vecs is not None
                more = np.zeros((cap, self.vecs.shape[1]), dtype=np.float32)
                more[: self.next_label] = self.vecs[: self.next_label]
                self.vecs, self.high = more, self.next_label
            grown = np.full(cap, -1, dtype=np.int64)
            grown[: len(self.row_of_label)] = self.row_of_label
            self.row_of_label = grown

    def add(self, rows: IntArray, vecs: FloatArray, bulk: bool = False) -> IntArray:
        """Insert ``vecs`` (lifted, for a graph) as new elements for ``rows``, on every core
        when part of a bulk write, or ``bulk_rows`` or more; returns their labels."""
        n = len(rows)
        need = self.next_label + n
        self.reserve(need)
        labels = np.arange(self.next_label, need, dtype=np.int64)
        if self.hnsw is not None:
            bulk_rows, bulk_threads = self.bulk
            self.hnsw.add_items(vecs, labels, num_threads=bulk_threads if bulk or n >= bulk_rows else 1)
        else:
            assert self.vecs is not None
            self.vecs[labels] = vecs[:, : self.vecs.shape[1]]
        self.note(vecs[:, : self.dim])
        self.row_of_label[labels] = rows
        self.next_label = need
        self.high = max(self.high, need)
        self.live += n
        return labels

    def compact(self, room: int) -> tuple[IntArray, IntArray]:
        """An ``exact`` band's deleted places filled with the live vectors past its live
        count, in place, with room for ``room`` elements after; returns the rows that moved
        and their new labels. Only the holes are written: moving every live vector to the
        front, at 1M items bands of 340k-436k vectors held their batch 31-50 ms (the move
        25 ms of it). The order of vectors changes; the answers do not (ties go by row)."""
        assert self.vecs is not None
        n = self.next_label
        rows = self.row_of_label
        live = int(np.count_nonzero(rows[:n] >= 0))
        holes = np.flatnonzero(rows[:live] < 0)
        tail = np.flatnonzero(rows[live:n] >= 0) + live  # as many as there are holes
        self.vecs[holes] = self.vecs[tail]
        rows[holes] = rows[tail]
        rows[live:n] = -1
        self.next_label, self.live, self.deleted = live, live, 0
        self.narrow(self.vecs[lo : min(lo + 65_536, live)] for lo in range(0, live, 65_536))
        self.reserve(room)
        self.limit = max(self.limit, room)
        return rows[holes].copy(), holes.astype(np.int64)

    def replace(self, labels: IntArray, vecs: FloatArray) -> None:
        """An ``exact`` band's elements ``labels`` overwritten with ``vecs`` where they are.
        A rewrite that stays in its band then leaves no deleted place behind (each one used
        to leave a zeroed place that every query scanned until a compaction) and needs no
        new label."""
        assert self.vecs is not None
        self.vecs[labels] = vecs[:, : self.vecs.shape[1]]
        self.note(vecs[:, : self.dim])

    def delete(self, labels: IntArray) -> None:
        """Mark ``labels`` deleted; an array's vectors are zeroed too, so that each scores
        exactly 0 and a block whose best score is nonzero has a live vector that scores it
        (``topk.offer_screened``'s floor)."""
        if self.hnsw is not None:
            for lab in labels.tolist():
                self.hnsw.mark_deleted(lab)
        else:
            assert self.vecs is not None
            self.vecs[labels] = 0.0
        self.row_of_label[labels] = -1
        self.deleted += len(labels)
        self.live -= len(labels)

    def search(self, q: FloatArray, k: int) -> tuple[IntArray, npt.NDArray[np.float32]]:
        """hnswlib's top ``k`` (rows, distances); asks for fewer when fewer are reachable."""
        assert self.hnsw is not None
        n = min(k, self.live)
        while n > 0:
            try:
                labels, dists = self.hnsw.knn_query(q, k=n, num_threads=1)
            except RuntimeError:
                # Fewer live points reachable than asked (many deleted): ask for fewer.
                n //= 2
                continue
            return self.row_of_label[labels[0]], dists[0]
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)

    def search_many(self, q: FloatArray, k: int) -> tuple[IntArray, npt.NDArray[np.float32]]:
        """``search`` for each row of ``q`` in one hnswlib call; (rows, distances) of shape
        (queries, n), rows -1 where a query got fewer answers than another."""
        assert self.hnsw is not None
        n = min(k, self.live)
        if n > 0:
            try:
                labels, dists = self.hnsw.knn_query(q, k=n, num_threads=1)
                return self.row_of_label[labels.astype(np.int64)], dists
            except RuntimeError:
                pass  # one query reached fewer live points than asked: ask each on its own
        rows = np.full((len(q), max(n, 0)), -1, dtype=np.int64)
        dist = np.zeros((len(q), max(n, 0)), dtype=np.float32)
        for b in range(len(q)):
            r, d = self.search(q[b : b + 1], k)
            rows[b, : len(r)], dist[b, : len(d)] = r, d
        return rows, dist


class VectorIndex:
    """Approximate top-k over a growing, changing table of vectors."""

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        if self.config.band_ratio < 1.0 + 1e-6 or self.config.band_floor <= 0.0:
            # Closer to 1, a float64 norm could reach norm band 2**32 (``_SPLIT``), whose key
            # would be another band's and its radius that band's.
            raise ValueError("band_ratio must be at least 1.000001 and band_floor > 0")
        self.dim = dim
        self._lock = threading.Lock()
        cap = self.config.initial_capacity
        self._graphs: dict[int, _Graph] = {}
        """Band -> its graph (one band, 0, unless ``mips``)."""
        self._indexed: FloatArray = np.zeros((cap, dim), dtype=np.float32)
        self._label = np.full(cap, -1, dtype=np.int64)
        """Row -> its live hnswlib label in its band's graph (-1: not indexed)."""
        self._band = np.zeros(cap, dtype=np.int64)
        """Row -> the band its live element is in."""
        self._drift = np.zeros(cap, dtype=np.float64)
        """Row -> relative drift when last changed, for drifted rows not yet rewritten (else 0)."""
        self._held_back = False
        """Whether some row's ``_drift`` is above 0 (a call with a limit left it pending)."""
        self.inserts = 0
        """Points written to hnswlib so far (new or re-inserted)."""
        self.rebuilds = 0
        self.busy_fallbacks = 0
        """Queries answered by exact search because a write held the index."""
        self.bands_skipped = 0
        """(query, band) pairs not asked: nothing in the band could have made the answer."""
        self._queries_waiting = 0
        """Queries blocked on the lock: the writer yields to them between two chunks."""
        self.last_refresh_s = 0.0
        self.last_refresh_at = 0.0
        self._merged = False
        """Whether the one band holds vectors the norm bands gave up (``_merge_bands``)."""
        self._scores = np.empty(0, dtype=np.float32)
        """``_screen``'s BLAS products (guarded by the lock, as the queries are)."""
        self._tops = np.empty(0, dtype=np.float32)
        """``_screen``'s block tops (``topk.offer_screened``), beside ``_scores``."""

    def __len__(self) -> int:
        return sum(g.live for g in list(self._graphs.values()))  # a writer may drop a band

    @property
    def capacity(self) -> int:
        return int(self._indexed.shape[0])

    @property
    def bands(self) -> int:
        """Graphs holding at least one live vector."""
        return sum(1 for g in list(self._graphs.values()) if g.live)

    @property
    def graphs(self) -> int:
        """Bands that are hnswlib graphs (the others are arrays)."""
        return sum(1 for g in list(self._graphs.values()) if not g.exact)

    def nbytes(self) -> int:
        """Resident memory the index holds: each hnswlib graph's elements (its serialised
        size), the part of each array band written so far, each band's label map, and the
        per-row arrays up to the last row indexed. Room reserved and never written is left
        out: numpy's zeros and hnswlib's element memory are not resident until written, and
        counting them would raise the memory budget (``bench.memory_budget``) by what no
        page holds."""
        graphs = 0
        with self._lock:
            for g in self._graphs.values():
                if g.hnsw is not None:
                    graphs += int(g.hnsw.index_file_size())
                graphs += g.row_of_label.nbytes  # filled with -1 when made: all of it written
                graphs += g.high * g.dim * 4 if g.vecs is not None else 0
            rows = self._rows_indexed()
        per_row = self._indexed.itemsize * self.dim + self._label.itemsize + self._band.itemsize \
            + self._drift.itemsize
        return graphs + rows * per_row

    def _rows_indexed(self) -> int:
        """One past the last row ever indexed (rows are never unindexed): how much of the
        per-row arrays is in use. Caller holds the lock."""
        indexed = np.flatnonzero(self._label >= 0)
        return int(indexed[-1]) + 1 if indexed.size else 0

    def state(self, copy: bool = True) -> dict[str, npt.NDArray[Any]]:
        """The index as plain arrays (each band's graph serialised by hnswlib), taken under
        the lock: a restart loads it instead of inserting every vector again (``copy``
        False: the arrays as views)."""
        own = np.copy if copy else np.asarray
        with self._lock:
            n = self._rows_indexed()
            out: dict[str, npt.NDArray[Any]] = {
                "index_config": _settings_key(self.dim, self.config),
                "index_bands": np.array(sorted(self._graphs), dtype=np.int64),
                "index_indexed": own(self._indexed[:n]), "index_label": own(self._label[:n]),
                "index_band": own(self._band[:n]),
                "index_merged": np.array([int(self._merged)], dtype=np.int64),
            }
            for b, g in self._graphs.items():
                out.update(g.state(f"index_graph{b}_", copy))
        return out

    @classmethod
    def restore(cls, dim: int, config: IndexConfig, state: dict[str, npt.NDArray[Any]]) -> VectorIndex | None:
        """The index saved by ``state``; None when it was built with other settings (the
        caller then builds a new one from the vectors)."""
        if "index_config" not in state or not np.array_equal(state["index_config"],
                                                             _settings_key(dim, config)):
            return None
        index = cls(dim, config)
        n = len(state["index_label"])
        index._ensure_rows(n)
        index._indexed[:n] = state["index_indexed"]
        index._label[:n] = state["index_label"]
        index._band[:n] = state["index_band"]
        index._merged = bool(state.get("index_merged", np.zeros(1))[0])  # older snapshots: absent
        for b in state["index_bands"].tolist():
            g = index._graphs[int(b)] = _Graph.load(dim, config, state, f"index_graph{b}_")
            rows = g.row_of_label[: g.next_label]
            rows = rows[rows >= 0]  # what each band holds bounds its scores
            g.narrow(index._indexed[rows[part]] for part in index._pieces(rows.size))
        return index

    def _ensure_rows(self, need: int) -> None:
        """Grow the per-row arrays by doubling (writer only; queries never read them)."""
        cap = self.capacity
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        grown = np.zeros((cap, self.dim), dtype=np.float32)
        grown[: self.capacity] = self._indexed
        self._indexed = grown
        self._label = np.concatenate([self._label, np.full(cap - len(self._label), -1, dtype=np.int64)])
        self._band = np.concatenate([self._band, np.zeros(cap - len(self._band), dtype=np.int64)])
        self._drift = np.concatenate([self._drift, np.zeros(cap - len(self._drift))])

    def select_stale(
        self, table: Table, rows: list[int] | IntArray, limit: int | None = None
    ) -> IntArray:
        """Which rows must be (re)written: new ones among ``rows``, and those that drifted.

        Rows whose vector is still all zeros are left out: they cannot rank anything yet.
        With ``limit``, every new row is taken but drifted ones only up to ``limit`` in all,
        largest relative drift first; the others stay pending with the drift measured when
        they were last changed, and compete again on the next call without being re-read,
        so a burst of changes is spread over a few refreshes at a bounded cost per call.
        """
        r_all = np.asarray(rows, dtype=np.int64)
        self._ensure_rows(int(r_all.max()) + 1 if r_all.size else 0)
        new_parts, moved_parts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for part in self._pieces(r_all.size):
            r = r_all[part]
            drift = np.empty(r.size, dtype=np.float64)
            cur = np.ascontiguousarray(table[r], dtype=np.float32)
            topk.drifts(cur, r, self._indexed, self._label, drift)
            new_parts.append(r[drift == np.inf])
            far = (drift > self.config.drift_tol) & (drift < np.inf)
            self._drift[r] = np.where(far, drift, 0.0)
            moved_parts.append(r[far])
        new = np.concatenate(new_parts)
        # Only a call with a limit leaves rows pending; without any, the drifted rows are
        # this call's (no pass over every row: a refresh in parts calls this each batch).
        moved = np.flatnonzero(self._drift > 0) if self._held_back or limit is not None \
            else np.unique(np.concatenate(moved_parts))
        room = len(moved) if limit is None else max(limit - len(new), 0)
        self._held_back = len(moved) > room
        if self._held_back:
            moved = moved[np.lexsort((moved, -self._drift[moved]))[:room]]
        self._drift[moved] = 0.0
        out: IntArray = np.concatenate([new, moved]).astype(np.int64)
        return out

    def stage(
        self, table: Table, rows: list[int] | IntArray, limit: int | None = None
    ) -> tuple[IntArray, FloatArray]:
        """Pick the stale ``rows`` and copy their vectors (on the thread that owns ``table``)."""
        stale = self.select_stale(table, rows, limit)
        return stale, np.ascontiguousarray(table[stale], dtype=np.float32)

    def _band_of(self, vecs: FloatArray, incoming: int) -> IntArray:
        """Each vector's band: the one band (``_ONE``) while the index stays small enough
        with ``incoming`` vectors more (the write's rows not indexed yet, counted over the
        whole write when it comes in pieces: rewritten rows add none), else its norm band
        (``_norm_band_of``)."""
        limit = self._one_band_cap
        if limit and not self._norm_bands_live() and len(self) + incoming <= limit:
            return np.full(len(vecs), _ONE, dtype=np.int64)
        return self._norm_band_of(vecs)

    def _unindexed(self, rows: IntArray) -> int:
        """How many of ``rows`` have no vector in the index yet (a rewrite adds none: counted
        as new, a refresh of drifted rows at the one band's limit would leave it, and the
        bands merge again 256 queries later, each time rewriting every vector)."""
        inside = rows < len(self._label)
        return int(np.count_nonzero(~inside) + np.count_nonzero(self._label[rows[inside]] < 0))

    def _norm_bands_live(self) -> list[_Graph]:
        """The bands other than the one band that hold live vectors."""
        return [g for b, g in list(self._graphs.items()) if b != _ONE and g.live]

    @property
    def _one_band_cap(self) -> int:
        """How many vectors the one band may hold: ``one_band_below``, or ``exact_below`` once
        the norm bands were merged for pruning too little (``_merge_due``)."""
        return self.config.exact_below if self._merged else self._one_band_limit

    def _norm_band_of(self, vecs: FloatArray) -> IntArray:
        """Each vector's norm band: ``b + _SPLIT * s``, with ``b`` its norm band (the smallest with
        norm <= floor * ratio**b, which fixes the band's radius) and ``s`` its head band: how
        many steps of ``ratio`` its norm without the last coordinate sits below radius /
        ratio (0 to ``_HEAD_STEPS``). The recommender's keys end in log(1 + clicks), which
        makes most of a key's norm for all but the trained items: without ``s`` one band
        held the unclicked items whatever their vectors, and a query that could not skip
        that band for its best vectors scanned all of it. A vector whose last coordinate is
        an ordinary one has ``s`` = 0 (its head is more than 1 / ratio of its norm)."""
        if self.config.space != "mips":
            return np.zeros(len(vecs), dtype=np.int64)
        head_sq, sq = self._sq_norms(vecs)
        norm = np.sqrt(sq)
        floor, ratio = self.config.band_floor, self.config.band_ratio
        band = np.ceil(np.log(np.maximum(norm, floor) / floor) / math.log(ratio)).astype(np.int64)
        band += norm > floor * ratio**band  # rounding at a boundary
        head = np.sqrt(head_sq)
        steps = np.log(floor * ratio ** (band - 1) / np.maximum(head, 1e-30)) / math.log(ratio)
        band += _SPLIT * np.clip(np.floor(steps), 0, _HEAD_STEPS).astype(np.int64)
        return band

    @staticmethod
    def _sq_norms(vecs: FloatArray) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Each row's squared norm without its last coordinate, and with it: one pass, and
        the second the float ``topk.sq_norms`` gives (its sum, in order, ends with the last
        square), while the head is its own sum (``sq - last**2`` cancels when the head is
        short beside the last coordinate)."""
        head_sq = topk.sq_norms(vecs[:, :-1])
        last = vecs[:, -1].astype(np.float64)
        return head_sq, head_sq + last * last

    def _radius(self, band: int) -> float:
        if band == _ONE:  # no bound: ``_asking`` never skips it (it is asked first anyway)
            return _ONE_RADIUS
        return self.config.band_floor * self.config.band_ratio ** (band % _SPLIT)

    @property
    def _one_band_allowed(self) -> bool:
        """Whether the index may keep a one band at all: only for ``mips``, with array bands
        (the one band is always an array)."""
        return self.config.space == "mips" and self.config.exact_below > 0

    @property
    def _one_band_limit(self) -> int:
        """``one_band_below`` as it applies (``_one_band_allowed``), never past ``exact_below``."""
        c = self.config
        if not self._one_band_allowed:
            return 0
        return max(0, min(c.one_band_below, c.exact_below))

    @property
    def _adaptive(self) -> bool:
        """Whether bands past ``exact_below`` choose between a graph and an array by their
        counts (``scan_per_insert``); ``exact_below`` 0 means graphs everywhere."""
        c = self.config
        return c.exact_below > 0 and c.scan_per_insert > 0 and c.space != "cosine"

    def _new_graph(self, band: int, capacity: int, exact: bool | None = None) -> _Graph:
        """A band for ``capacity`` elements: ``exact`` (unless said) when that is at most
        ``exact_below``; never for ``cosine``."""
        if exact is None:
            exact = capacity <= self.config.exact_below
        return _Graph(self.dim, self.config, max(self.config.initial_capacity, capacity), self._radius(band),
                      exact=exact and self.config.space != "cosine")

    def _outgrown(self, g: _Graph) -> bool:
        """Whether a band is due for a rebuild: a graph with more deleted elements than
        ``compact_ratio`` times its live ones; an ``exact`` band past its ``limit``, or with
        more than an eighth as many deleted as live (plus 64): its rebuild compacts its
        array, and every deleted one costs every query a product. Past ``exact_below``, also
        a band whose counts call for the other kind (``_array_pays``)."""
        pays = self._array_pays(g) if g.next_label > self.config.exact_below else None
        if g.exact:  # often asked: a graph is built
            return g.next_label > g.limit or 8 * g.deleted > g.live + 512 or pays is False
        if g.deleted > self.config.compact_ratio * max(g.live, 1):
            return True
        return pays is True  # rarely asked, often written: a copy makes it exact

    def _array_pays(self, g: _Graph) -> bool | None:
        """Whether band ``g`` costs less as an array than as a graph, from its counts (None:
        too few of them yet, or the setting is off): the vectors its queries would score
        exactly against ``scan_per_insert`` times the vectors written to it. A graph turns
        into an array (a copy) under half of that; an array stays one while its scans come
        to less than all of it plus the inserts that would build its graph, so the build
        must pay for itself over as many clicks as the counts cover. Without the build in
        it, at 1M items three bands of 31k-88k took graphs in the first seconds after a
        preload, when queries asked them and hardly any vector had moved yet, and then cost
        4.7 inserts per click (about 290 us). What a walk costs is taken off each query's
        scan (``scan_per_walk``): a band little larger than that never pays for a graph."""
        if not self._adaptive or g.queries < 256 or g.written < 256:
            return None
        c = self.config
        inserts = g.written + (g.live if g.exact else 0)
        walk = c.scan_per_walk * (1.0 if g.exact else 1.0 + g.deleted / max(g.live, 1))
        ratio = g.asked * max(g.live - walk, 0.0) / (inserts * c.scan_per_insert)
        return ratio < (1.0 if g.exact else 0.5)

    def write(self, labels: IntArray, vecs: FloatArray) -> int:
        """Insert or replace staged vectors (``labels`` are table rows); one writer thread.

        The lock is taken per ``write_chunk`` rows, so a query waits for at most one chunk
        of inserts, not the whole write. A bulk write (``bulk_rows`` or more) inserts on every
        core, in pieces of ``bulk_piece`` rows into graphs sized for the whole write up front."""
        rows = np.asarray(labels, dtype=np.int64)
        return self._write(rows, lambda part: vecs[part], self._band_of(vecs, self._unindexed(rows)))

    def _write(self, rows: IntArray, vecs_of: Callable[[slice], FloatArray], band: IntArray,
               chunk: int | None = None) -> int:
        """``write`` with the vectors read a piece at a time (``vecs_of(part)``: the vectors
        of ``rows[part]``), ``chunk`` rows per hold of the lock (``write_chunk`` unless
        given), and compactions checked once, after the last piece."""
        if rows.size == 0:
            return 0
        t0 = time.perf_counter()
        self._ensure_rows(int(rows.max()) + 1)
        touched: set[int] = set()
        step = max(1, chunk or self.config.write_chunk)
        bulk = rows.size >= self.config.bulk_rows
        if bulk:
            step = max(1, self.config.bulk_piece)
            self._reserve(band)
        for lo in range(0, rows.size, step):
            part = slice(lo, lo + step)
            self._write_locked(rows[part], vecs_of(part), band[part], touched, bulk)
            if self._queries_waiting:
                # Python's lock is not fair: a writer that takes it again at once can keep a
                # woken query waiting for the whole write (seen in CI). Let the query run.
                time.sleep(0)
        self._leave_one_band()
        for b in sorted(touched):
            g = self._graphs.get(b)
            if g is not None and self._outgrown(g):
                self._rebuild(b)
        if self._merge_due():
            self._merge_bands()
        self.inserts += int(rows.size)
        self.last_refresh_s = time.perf_counter() - t0
        self.last_refresh_at = time.time()
        return int(rows.size)

    def _leave_one_band(self) -> None:
        """Once a write has put vectors in norm bands (or the index outgrew the limit), the
        one band's vectors are moved to theirs (``_move``): every vector then has its norm
        band."""
        one = self._graphs.get(_ONE)
        if one is None or not one.live:
            return
        if not self._norm_bands_live() and one.live <= self._one_band_cap:
            return
        self._merged = False
        rows = one.row_of_label[: one.next_label]
        rows = np.sort(rows[rows >= 0])
        band = np.concatenate([self._norm_band_of(self._indexed[rows[part]])
                               for part in self._pieces(rows.size)])
        self._move(rows, band, [_ONE])

    def _merge_due(self) -> bool:
        """Whether the norm bands, all arrays and ``exact_below`` vectors at most, scan
        ``one_band_scan`` of their vectors per query or more (from each band's own counts,
        256 queries at least: the share of queries that asked it, times its vectors, live
        and deleted)."""
        c = self.config
        if not self._one_band_allowed or c.one_band_scan <= 0 or self._merged:
            return False
        one = self._graphs.get(_ONE)
        bands = self._norm_bands_live()
        if (one is not None and one.live) or len(bands) < 2:
            return False
        if any(not g.exact for g in bands):
            return False
        n = sum(g.next_label for g in bands)
        # Judged on the bands queries have seen (a band just made has no counts), when they
        # hold three quarters of the vectors or more.
        seen = [g for g in bands if g.queries >= 256]
        n_seen = sum(g.next_label for g in seen)
        scanned = sum(g.asked / g.queries * g.next_label for g in seen)
        return n <= c.exact_below and 4 * n_seen >= 3 * n and scanned >= c.one_band_scan * n_seen

    def _merge_bands(self) -> None:
        """Every vector moved to the one band (``_merge_due``)."""
        self._merged = True
        rows = np.flatnonzero(self._label >= 0)
        self._move(rows, np.full(rows.size, _ONE, dtype=np.int64), [b for b in self._graphs if b != _ONE])

    def _move(self, rows: IntArray, band: IntArray, sources: list[int]) -> None:
        """The indexed vectors of ``rows`` written to ``band``, then the ``sources`` bands
        that leaves empty dropped (a compaction in that write may have dropped them
        already). A query between two chunks of the write finds each vector in one band or
        the other, never both or neither: a chunk deletes and adds under one hold of the lock."""
        self._write(rows, lambda part: self._indexed[rows[part]], band)
        with self._lock:
            for b in sources:
                g = self._graphs.get(b)
                if g is not None and not g.live:
                    del self._graphs[b]

    def _pieces(self, size: int) -> list[slice]:
        """``range(size)`` in slices of ``bulk_piece`` (a bulk operation's unit)."""
        piece = max(1, self.config.bulk_piece)
        return [slice(lo, lo + piece) for lo in range(0, size, piece)]

    def _reserve(self, band: IntArray) -> None:
        """Size each band's graph for inserting one vector per entry of ``band`` (a bulk
        write in pieces then grows each graph once). A new array gets the room a compaction
        leaves (``_room``): sized to fit, the stream's first writes after a preload doubled
        the largest bands at once."""
        with self._lock:
            for b, c in zip(*np.unique(band, return_counts=True), strict=True):
                g = self._graphs.get(int(b))
                if g is None:  # no counts yet: an array, until its queries ask for a graph
                    exact = True if self._adaptive else int(c) <= self.config.exact_below
                    self._graphs[int(b)] = self._new_graph(int(b), _room(int(c)) if exact else int(c), exact)
                else:
                    g.reserve(g.next_label + int(c))

    def _write_locked(self, rows: IntArray, vecs: FloatArray, band: IntArray, touched: set[int],
                      bulk: bool = False) -> None:
        """One chunk of ``write``, under the lock: a vector that stays in its array band is
        overwritten where it is (``_Graph.replace``); elsewhere the old element is marked
        deleted and a new one added."""
        present = self._label[rows] >= 0
        old = self._band[rows]
        with self._lock:
            stays = present & (old == band)
            for b in np.unique(band[stays]).tolist():
                kept = self._graphs[b]
                if not kept.exact:
                    stays[band == b] = False  # a graph's element is replaced by delete + add
                    continue
                mine = stays & (band == b)
                kept.replace(self._label[rows[mine]], vecs[mine])
                if not bulk:
                    kept.written += int(mine.sum())
                touched.add(b)
            moving = present & ~stays
            for b in np.unique(old[moving]).tolist():
                mine = moving & (old == b)
                self._graphs[b].delete(self._label[rows[mine]])
                touched.add(b)
            for b in np.unique(band[~stays]).tolist():
                mine = ~stays & (band == b)
                g = self._graphs.get(b)
                if g is None:
                    g = self._graphs[b] = self._new_graph(b, int(mine.sum()))
                self._label[rows[mine]] = g.add(rows[mine], self._lift(vecs[mine], g), bulk)
                if not bulk:  # a restore or preload is not the stream's rate of writes
                    g.written += int(mine.sum())
                touched.add(b)
            self._indexed[rows] = vecs  # what drift is measured from, and a rebuild reads
            self._band[rows] = band

    def _lift(self, vecs: FloatArray, g: _Graph) -> FloatArray:
        """What band ``g`` stores for ``vecs``: as given in an ``exact`` band (scored by
        inner product directly); in a graph, for ``mips``, with sqrt(R^2 - |x|^2) appended
        (R the band's radius) so every point has norm R; then for a query
        (q, 0), |q - x|^2 = |q|^2 + R^2 - 2 q.x, and L2 order is exactly inner-product order.
        HNSW is built for metric distances; on raw inner products of learned item vectors
        its graph degrades (measured on the replay: HR@20 0.584 with ``ip``, 0.595 even at
        ef 300, against 0.622 for exact search and 0.624 with a lift)."""
        if g.exact:
            return vecs
        if self.config.space != "mips":
            return np.ascontiguousarray(vecs, dtype=np.float32)
        sq = np.maximum(g.radius**2 - np.einsum("nd,nd->n", vecs, vecs), 0.0)
        return np.ascontiguousarray(np.concatenate([vecs, np.sqrt(sq)[:, None]], axis=1), dtype=np.float32)

    def _rebuild(self, band: int) -> None:
        """A fresh graph for ``band`` from its indexed vectors, built off the lock, swapped in."""
        g_old = self._graphs[band]
        live = g_old.live
        if live == 0:  # every vector moved to other bands
            with self._lock:
                del self._graphs[band]
            return
        # Room for as many again: exact while at most ``exact_below`` is live (half of it
        # with ``scan_per_insert`` off: a margin against turning back and forth), or while
        # its queries would score fewer vectors than inserts would cost (the band's counts,
        # with a margin; without enough counts, an array stays an array: a graph is built
        # only once queries show they need it). Counted, a 9k band asked by 38% of queries
        # still took a graph early on, when its writes had not begun.
        small = (1 if self._adaptive else 2) * live <= self.config.exact_below or band == _ONE
        pays = self._array_pays(g_old)
        exact = small or ((self._adaptive and g_old.exact) if pays is None else pays)
        # The counts carry over, halved: a compaction soon after a decision still has them.
        counts = g_old.queries // 2, g_old.asked // 2, g_old.written // 2
        self.rebuilds += 1
        if exact and g_old.vecs is not None:
            # An array stays an array: compacted where it is, under the lock (its holes
            # filled from its tail; a second array would double the largest band's memory
            # for the time of the copy), grown only if less than a quarter (plus the 64 of
            # ``_outgrown``) would be left: the next compaction comes at an eighth.
            with self._lock:
                moved, labels = g_old.compact(live + live // 4 + 64)
                self._label[moved] = labels
            g_old.queries, g_old.asked, g_old.written = counts
            return
        old = g_old.row_of_label
        rows = np.sort(old[old >= 0])  # the band's live rows, without a pass over every row
        graph = self._new_graph(band, _room(live), exact)
        graph.queries, graph.asked, graph.written = counts
        parts = [rows[part] for part in self._pieces(rows.size)]
        labels = np.concatenate([graph.add(p, self._lift(self._indexed[p], graph)) for p in parts])
        with self._lock:
            self._graphs[band] = graph
            self._label[rows] = labels

    def refresh(self, table: Table, rows: list[int] | IntArray, limit: int | None = None) -> int:
        """``stage`` then ``write`` on the calling thread; returns points written. A bulk
        refresh reads ``table`` one ``bulk_piece`` at a time, so no copy of every stale
        vector is made at once (a restore at 1M items rewrites everything)."""
        stale = self.select_stale(table, rows, limit)
        if stale.size <= max(1, self.config.bulk_piece):
            # One hold of the lock: no query can come between chunks from the thread that is
            # writing, and each chunk loops over the bands its rows fall in (a refresh in
            # parts, ``Recommender.refresh_spread``, took 4x longer in 64-row chunks).
            vecs = np.ascontiguousarray(table[stale], dtype=np.float32)
            return self._write(stale, lambda part: vecs[part], self._band_of(vecs, self._unindexed(stale)),
                               chunk=stale.size)
        incoming = self._unindexed(stale)
        band = np.concatenate([self._band_of(table[stale[part]], incoming)
                               for part in self._pieces(stale.size)])
        return self._write(stale, lambda part: np.ascontiguousarray(table[stale[part]], dtype=np.float32),
                           band)

    def query(
        self, q: FloatArray, k: int, fallback: FloatArray | None = None
    ) -> tuple[IntArray, npt.NDArray[np.float32]]:
        """Up to ``k`` nearest rows to ``q`` (one query vector) and their index distances
        (``mips``: 1 - q.x, as for the exact search), best first; ties by row.

        When a write holds the index and ``fallback`` (the current table, rows aligned with
        labels) is given, answers by exact inner-product search over it instead of waiting.
        """
        return self.query_many(np.reshape(q, (1, -1)), k, fallback)[0]

    @staticmethod
    def _asking(g: _Graph, qn: npt.NDArray[np.float64], qa: npt.NDArray[np.float64],
                ql: npt.NDArray[np.float64], hd: npt.NDArray[np.float32], hn: IntArray,
                k: int) -> IntArray | None:
        """The queries band ``g`` could still give something (None: all of them). No vector
        of the band scores more than the band's radius times the query's norm ``qn``
        (Cauchy-Schwarz), nor more than its longest head times the query's head ``qa`` plus
        the last coordinates' product (``ql`` times one end of the band's range), so a query
        whose heap is full and whose worst kept distance is below 1 minus the smaller bound
        would reject everything the band returned (norm-range pruning, as in Yan et al.; on
        the bench's 100k catalogue the small-norm bands that hold most vectors were
        skippable for 94% of their elements). Skipping them changes no answer: the heaps get
        exactly what they would have kept. The margin covers the float32 rounding of the
        scores (``topk.asking``; compiled: 33 bands asked per batch cost 19 us per click in
        numpy)."""
        ask: IntArray = topk.asking(qn, qa, ql, hd, hn, k, g.radius, g.head_max, g.last_lo, g.last_hi)
        return None if ask.size == len(qn) else ask

    def _screen(self, g: _Graph, q: FloatArray, ask: IntArray, qn: npt.NDArray[np.float64],
                hd: npt.NDArray[np.float32], hr: IntArray, hn: IntArray) -> None:
        """Offer an ``exact`` band's vectors to the heaps of the queries ``ask`` (rows of
        ``q``, the batch's own array): one BLAS product of those queries by a piece of the
        band screens out what cannot enter a heap, and the compiled product scores the rest
        (``topk.offer_screened``: the answers are those of scoring every vector).
        The screen's margin bounds both products' float32 rounding, dim * 2**-24 times
        |q| |x| each (Higham's gamma_n, doubled for a margin), plus 1e-6 for the subtraction
        from 1. Called under the lock, which also guards the scores' buffer."""
        assert g.vecs is not None
        n, d = g.next_label, g.vecs.shape[1]
        margin = g.norm_max * 4.0 * d * 2.0**-24
        q_ask = q[:, :d] if ask.size == len(q) else q[ask, :d]
        step = _SCREEN_PIECE
        # Each piece's scores and block tops C-contiguous, the last, shorter piece's too: one
        # memory layout, so one compiled version of the pass for every band (``warm_up``
        # loads it).
        need = ask.size * min(step, n)
        if self._scores.size < need:
            self._scores = np.empty(max(need, 2 * self._scores.size), dtype=np.float32)
            self._tops = np.empty(self._scores.size // topk._BLOCK + ask.size, dtype=np.float32)
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            out = self._scores[: (hi - lo) * ask.size].reshape(hi - lo, ask.size)
            part = np.matmul(g.vecs[lo:hi], q_ask.T, out=out)
            tops = self._tops[: (hi - lo) // topk._BLOCK * ask.size].reshape(-1, ask.size)
            topk.offer_screened(part, g.vecs[lo:hi], g.row_of_label[lo:hi], q, ask, qn, margin,
                                hd, hr, hn, tops)

    def query_many(
        self, qs: FloatArray, k: int, fallback: FloatArray | None = None
    ) -> list[tuple[IntArray, npt.NDArray[np.float32]]]:
        """``query`` for each row of ``qs``, asking each band once for the whole batch: one
        ``knn_query`` per graph over all queries, and for a small band one product per query
        and one compiled top-k pass over all of them, so the per-call costs (Python,
        locking, selection, numba dispatch) are paid per batch. Row ``b`` of the answer is
        what ``query(qs[b])`` gives."""
        rows, dist, n = self.query_batch(qs, k, fallback)
        return [(rows[b, : n[b]], dist[b, : n[b]]) for b in range(len(n))]

    def query_batch(
        self, qs: FloatArray, k: int, fallback: FloatArray | None = None
    ) -> tuple[IntArray, npt.NDArray[np.float32], IntArray]:
        """``query_many``'s answer as arrays, for a caller that goes on in compiled code
        (``Recommender``): rows and distances of shape (queries, k), best first, of which
        the first ``n[b]`` of row ``b`` are filled (the rest: row -1)."""
        lifted = self.config.space == "mips"
        qs = np.asarray(qs, dtype=np.float32)
        if qs.ndim != 2:
            raise ValueError("queries must be one per row")
        nq, d_q = qs.shape
        if d_q > self.dim:
            raise ValueError(f"query has {d_q} dimensions, the index {self.dim}")
        k = max(k, 0)
        hd = np.zeros((nq, k), dtype=np.float32)
        hr = np.full((nq, k), -1, dtype=np.int64)
        hn = np.zeros(nq, dtype=np.int64)
        if k == 0 or nq == 0:
            return hr, hd, hn
        # Shorter queries are zero-padded (hnswlib itself reads ``dim`` floats whatever it gets).
        q_idx = np.zeros((nq, self.dim + lifted), dtype=np.float32)
        q_idx[:, :d_q] = qs
        q0 = q_idx[:, : self.dim]
        if fallback is not None and not self._lock.acquire(blocking=False):
            self.busy_fallbacks += nq
            for b, q in enumerate(q0):
                rows, dist = exact_top_k(fallback, q[: fallback.shape[1]], k)
                hn[b] = len(rows)
                hr[b, : hn[b]], hd[b, : hn[b]] = rows, dist
            return hr, hd, hn
        if fallback is None:
            self._queries_waiting += 1
            try:
                self._lock.acquire()
            finally:
                self._queries_waiting -= 1
        try:
            # The head's own sum (``_sq_norms``): a head norm too small would skip a band
            # that holds the best answer.
            qa_sq, qq = self._sq_norms(q0)
            qn, qa = np.sqrt(qq), np.sqrt(qa_sq)
            ql = q0[:, -1].astype(np.float64)
            # Widest norms first, and of those the longest heads: a band none of whose vectors
            # can beat what a query already keeps is not asked for it (``_asking``). The order
            # is the batch's own business only through what is skipped, and a fixed one keeps
            # a query's answer the same in any batch (graph distances round differently from
            # exact ones: a different order could keep a different one of two tied answers).
            # Ordered by each band's bound for the batch's mean query, it scanned no fewer.
            graphs = sorted((g for g in self._graphs.values() if g.live),
                            key=lambda g: (-g.radius, -g.head_max))
            everyone = np.arange(nq)
            for g in graphs:
                ask = self._asking(g, qn, qa, ql, hd, hn, k) if lifted else None
                g.queries += nq
                g.asked += nq if ask is None else ask.size
                if ask is not None:
                    self.bands_skipped += nq - ask.size
                    if ask.size == 0:
                        continue
                if g.vecs is not None:  # small band: products beat a walk
                    self._screen(g, q_idx, everyone if ask is None else ask, qn, hd, hr, hn)
                    continue
                # A subset of the queries is gathered into arrays of its own (a copy, so
                # ``q`` keeps one memory layout and one compiled version) and put back after.
                q_g, qq_g = (q_idx, qq) if ask is None else (q_idx[ask], qq[ask])
                hd_g, hr_g, hn_g = (hd, hr, hn) if ask is None else (hd[ask], hr[ask], hn[ask])
                rows, dist = g.search_many(q_g, k)
                if lifted:  # |q-x|^2 = |q|^2 + R^2 - 2 q.x  ->  1 - q.x
                    shift = (1.0 - (qq_g + g.radius**2) / 2.0).astype(np.float32)
                    dist = dist * np.float32(0.5) + shift[:, None]
                topk.offer(dist, rows, hd_g, hr_g, hn_g)
                if ask is not None:
                    hd[ask], hr[ask], hn[ask] = hd_g, hr_g, hn_g
        finally:
            self._lock.release()
        topk.sorted_heaps(hd, hr, hn)
        return hr, hd, hn


_SPLIT = 1 << 32
"""Band keys: ``norm band + _SPLIT * head band`` (``VectorIndex._band_of``)."""
_ONE = -1
"""The key of the one band a small index keeps (``IndexConfig.one_band_below``)."""
_ONE_RADIUS = float(np.finfo(np.float32).max)
"""The one band's radius: no norm bound (finite, so that a zero query's bound is not NaN)."""
_HEAD_STEPS = 6
"""Head bands below the norm band's radius / ratio: 7 in all (at ratio 1.5, down to 1/17 of it)."""

_SCREEN_PIECE = 16_384
"""Vectors screened per BLAS product: a band up to the default ``exact_below`` in one, so the floor
``topk.offer_screened`` sets from the blocks' best scores is the whole band's (with 2,048 a
piece, the floors of the first pieces were weak and cost more than they saved: 52 against
32 us a query over 8.2k vectors, BLAS included). 64 queries' scores: 4 MB, kept between
calls (``VectorIndex._scores``: a fresh 4 MB each call is mapped and faulted in anew)."""


def _room(live: int) -> int:
    """Capacity for a new or rebuilt band of ``live`` vectors (a rebuilt graph too, which
    grows the same way): as many again to spare, so an array's writes reach a compaction
    (an eighth deleted) long before they need a bigger array. Growing one is a copy: at 1M
    items, a 435k band's held a batch 123-132 ms. The spare room costs address space only;
    no page of it is resident until written (``_Graph.high``)."""
    return 2 * live + 1024


def _settings_key(dim: int, c: IndexConfig) -> npt.NDArray[np.float64]:
    """The settings a saved index must share with the one loading it."""
    return np.array([dim, c.m, c.band_ratio, c.band_floor, c.exact_below,
                     ("ip", "mips", "cosine").index(c.space), _SPLIT, _HEAD_STEPS], dtype=np.float64)


def exact_top_k(table: FloatArray, q: FloatArray, k: int) -> tuple[IntArray, npt.NDArray[np.float32]]:
    """Exact top-``k`` rows by inner product (the reference the index is tested against)."""
    if table.shape[0] == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = table @ q
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top.astype(np.int64), (1.0 - scores[top]).astype(np.float32)
