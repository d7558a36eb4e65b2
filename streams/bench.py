"""``sessionrec bench core``: the pure path's speed and memory, beside this machine's ceilings.

Prints JSON lines. Every figure comes from one run on one stream, and the references (gensim's
compiled Word2Vec for learning, exact numpy search for retrieval) are timed in the same run
on the same data, so ratios mean something on a noisy machine.
"""

from __future__ import annotations

import json
import math
import platform
import resource
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from models.index import exact_top_k
from models.recommender import Recommender, warm_up
from models.session import Click, VisitorState, step
from streams.metrics import IndexWatch
from streams.settings import Settings
from streams.synthetic import ZIPF


@dataclass(frozen=True)
class BenchClick:
    visitor_id: str
    item_id: str
    ts: float


def load_stream(path: str | None, clicks: int, items: int, seed: int) -> list[BenchClick]:
    if path:
        from models.evaluate import read_sessions_tsv

        rows = read_sessions_tsv(path)
        out = [BenchClick(r.session_id, r.item_id, r.ts) for r in rows]
        return out[:clicks] if clicks else out
    from streams.synthetic import synthetic_stream

    return [BenchClick(c.visitor_id, c.item_id, c.ts)
            for c in synthetic_stream(clicks, items=items, seed=seed)]


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": __import__("os").cpu_count(), "processor": platform.processor() or "unknown"}


PRELOAD_HISTORY_CLICKS_PER_ITEM = 10.0


def preload(model: Recommender, items: int, seed: int = 0) -> None:
    """Give the model the whole synthetic catalogue (``i0`` ... ``i{items-1}``) before the timed
    stream: each item known, with a small random output vector, all indexed, and the click
    counts a history of ``PRELOAD_HISTORY_CLICKS_PER_ITEM`` clicks per item drawn from the
    stream's own Zipf popularity would leave (at least 1). A stream alone reaches only the
    items it clicks; this puts the model at its full size. The counts matter: negatives are
    drawn by count**0.75, so with every count at 1 each click's ~100 negatives landed on
    never-trained items across the whole catalogue, every one moved enough to be rewritten
    in the index (29 ms of index writes per click at 100k items), which a live catalogue,
    whose negatives fall mostly on its popular items, does not do."""
    vec = model.vectors
    for i in range(items):
        vec.upsert(f"i{i}")
    n = len(vec)
    # The history every copy of the model would already have: not news to share.
    vec.will_write(np.arange(n), share=False)
    rng = np.random.default_rng(seed + 1)
    scale = np.float32(0.3 / math.sqrt(vec.config.dim))
    for lo in range(0, n, 65_536):  # in pieces: no full-size temporaries at 1M items
        part = vec.w_out[lo : min(n, lo + 65_536)]
        part[:] = rng.standard_normal(part.shape, dtype=np.float32)
        part *= scale
    pop = np.arange(1, n + 1, dtype=np.float64) ** -ZIPF
    history = np.floor(pop / pop.sum() * PRELOAD_HISTORY_CLICKS_PER_ITEM * n)
    vec.vocab.counts[:n] = np.maximum(vec.vocab.counts[:n], np.maximum(history, 1.0))
    vec.sampler.rebuild(vec.vocab.counts, n)
    model.refresh()


def run_core(stream: list[BenchClick], settings: Settings, k: int = 20,
             preload_items: int = 0, batch: int = 1) -> dict[str, Any]:
    """Learn + recommend for every click, timing each part.

    ``batch`` > 1: clicks are taken ``batch`` at a time, as a worker that drains what has
    arrived would: each is stepped in order, then all learned in order in one call
    (``learn_many``), then one refresh check, then one
    ``recommend_many`` for the batch's sessions as each was right after its own click.
    ``p50_ms``/``p99_ms`` are then per batch: the time from a batch's first click being
    taken to its last recommendation (what a click waits once its batch is formed).

    A model that shares (``share_interval_s`` > 0, the worker's default) hands out its
    delta every ``share_interval_s`` (or sooner, once ``share_max_rows`` rows wait) as the
    worker does, in parts of ``share_part_rows`` between batches (the delta dropped), so that
    what the shared base holds is what a worker's holds. A part's time counts in the next
    batch's latency, whose clicks wait for it in the worker."""
    cfg = settings.session_config()
    model = Recommender(settings.recommender_config())
    if preload_items:
        preload(model, preload_items, settings.seed)
    model_items0 = len(model.vectors)
    states: dict[str, VisitorState] = {}
    watermark = -math.inf
    n = len(stream)
    batch = max(1, batch)
    per_batch = np.zeros(math.ceil(n / batch), dtype=np.float64)
    stale = np.zeros_like(per_batch)
    watch = IndexWatch()  # the worker's staleness gauge, read after every batch
    learn_t = rec_t = refresh_t = share_t = 0.0
    shares = model.vectors.config.shared
    rss0 = rss_mb()
    perf = time.perf_counter
    t_start, cpu_start = perf(), time.process_time()
    last_share, owed = t_start, 0.0
    base_peak = 0
    for bi, lo in enumerate(range(0, n, batch)):
        t0 = perf()
        sessions: list[list[str]] = []
        clicks: list[tuple[str, tuple[str, ...]]] = []
        for c in stream[lo : lo + batch]:
            state, outs = step(states.get(c.visitor_id), Click(c.visitor_id, c.item_id, c.ts, ""), cfg,
                               watermark)
            watermark = max(watermark, c.ts)
            states[c.visitor_id] = state
            clicks.append((c.item_id, getattr(outs[-1], "context", ())))
            if state.session is not None:
                # The session as it is now: a later click of the batch may extend it.
                sessions.append(list(state.session.items) if batch > 1 else state.session.items)
        t2 = perf()
        model.learn_many(clicks)
        t3 = perf()
        learn_t += t3 - t2
        model.maybe_refresh(t3)
        t4 = perf()
        if sessions:
            if batch > 1:
                model.recommend_many(sessions, k)
            else:
                model.recommend(sessions[0], k)
        t5 = perf()
        refresh_t += t4 - t3
        rec_t += t5 - t4
        per_batch[bi] = t5 - t0 + owed
        stale[bi] = watch.observe(model, t5)
        owed = 0.0
        base_peak = max(base_peak, model.vectors.unshared)
        due = model.share_due(settings.share_max_rows) or t5 - last_share >= settings.share_interval_s
        if shares and due:
            if not model.sharing:
                last_share = t5
            model.share(settings.share_min_drift, settings.share_max_wait, settings.share_part_rows)
            owed = perf() - t5  # the next batch's clicks wait for it
            share_t += owed
        i = lo + batch - 1
        if len(states) > 50_000 and i // 10_000 != (i - batch) // 10_000:
            # Keep memory to live sessions, as the worker's sweep does.
            states = {v: s for v, s in states.items()
                      if s.session is not None and watermark - s.session.end <= cfg.gap_s}
    model.flush()  # the last background write is part of the run
    total, cpu = perf() - t_start, time.process_time() - cpu_start
    vec = model.vectors
    n_items = len(vec)
    table_bytes = vec.w_in.nbytes + vec.w_out.nbytes
    return {
        "clicks": n,
        "batch": batch,
        "items": n_items,
        "items_preloaded": model_items0,
        "dim": vec.config.dim,
        "clicks_per_s": round(n / total, 1),
        # CPU of every thread (the index writer's too): clicks per second of one core.
        "clicks_per_cpu_s": round(n / max(cpu, 1e-9), 1),
        "background_writes": model.config.background_writes,
        "learn_us_per_click": round(learn_t / n * 1e6, 2),
        "recommend_us_per_click": round(rec_t / n * 1e6, 2),
        "index_refresh_us_per_click": round(refresh_t / n * 1e6, 2),
        "share_us_per_click": round(share_t / n * 1e6, 2),
        "shared_base_rows": model.vectors.unshared,
        "shared_base_peak_rows": base_peak,
        "p50_ms": round(float(np.percentile(per_batch, 50)) * 1e3, 4),
        "p99_ms": round(float(np.percentile(per_batch, 99)) * 1e3, 4),
        # The age of the oldest vector change not yet written to the index, after each batch:
        # what the worker's gauge shows, and a bound on any one change's wait (without a
        # write budget: rows it holds back are not counted).
        "staleness_p99_s": round(float(np.percentile(stale, 99)), 4),
        "staleness_max_s": round(float(stale.max()), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(rss_mb() - rss0, 1),
        "bytes_per_item": round((rss_mb() - rss0) * 2**20 / max(1, n_items), 1),
        "vector_table_bytes_per_item": round(table_bytes / max(1, n_items), 1),
        "_model": model,
    }


def run_learn_only(stream: list[BenchClick], settings: Settings) -> float:
    """Clicks per second for learning alone (sessions by visitor, no index, no serving, no
    base kept for sharing with other copies), the figure set beside gensim's. Clicks are
    learned ``batch_max`` at a time (``learn_many``), as the worker takes them; gensim too
    hands its compiled loop thousands of words per call."""
    model = Recommender(replace(settings, share_interval_s=0.0).recommender_config())
    vectors = model.vectors
    last: dict[str, list[str]] = {}
    window = settings.window
    batch = max(1, settings.batch_max)
    t0 = time.perf_counter()
    for lo in range(0, len(stream), batch):
        clicks: list[tuple[str, tuple[str, ...]]] = []
        for c in stream[lo : lo + batch]:
            ctx = last.setdefault(c.visitor_id, [])
            clicks.append((c.item_id, tuple(ctx)))
            ctx.append(c.item_id)
            if len(ctx) > window:
                del ctx[0]
        vectors.learn_many(clicks)
    return len(stream) / (time.perf_counter() - t0)


def run_gensim(stream: list[BenchClick], settings: Settings) -> dict[str, Any]:
    """gensim's compiled skip-gram over the same sessions, one worker, one epoch."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        return {"gensim_words_per_s": None, "gensim": "not installed (pip install -e '.[bench]')"}
    sentences: dict[str, list[str]] = {}
    for c in stream:
        sentences.setdefault(c.visitor_id, []).append(c.item_id)
    corpus = list(sentences.values())
    words = sum(len(s) for s in corpus)
    model = Word2Vec(vector_size=settings.dim, window=settings.window, negative=settings.negatives,
                     sg=1, hs=0, min_count=1, sample=0, workers=1, seed=settings.seed)
    model.build_vocab(corpus)
    t0 = time.perf_counter()
    model.train(corpus, total_examples=len(corpus), epochs=1)
    return {"gensim_words_per_s": round(words / (time.perf_counter() - t0), 1)}


def learn_vs_gensim(stream: list[BenchClick], settings: Settings, gensim: bool,
                    rounds: int) -> dict[str, Any]:
    """Learning alone and gensim, ``rounds`` times each, alternated: the ratio of each round's
    pair and their median. Measured once each, the ratio moved by a third between runs on this
    machine (gensim alone ranged 209k-356k words/s in one afternoon)."""
    learn: list[float] = []
    words: list[float] = []
    missing: dict[str, Any] = {}
    for _ in range(max(1, rounds)):
        learn.append(run_learn_only(stream, settings))
        if gensim and not missing:
            g = run_gensim(stream, settings)
            if g.get("gensim_words_per_s"):
                words.append(g["gensim_words_per_s"])
            else:  # not installed: say so, and go on with learning's own rounds
                missing = g
    out: dict[str, Any] = {"learn_only_clicks_per_s": round(float(np.median(learn)), 1),
                           "learn_only_rounds": [round(x, 1) for x in learn], **missing}
    if words:
        ratios = [a / b for a, b in zip(learn, words, strict=True)]
        out.update({"gensim_words_per_s": round(float(np.median(words)), 1),
                    "gensim_rounds": [round(x, 1) for x in words],
                    "learn_ratio_rounds": [round(x, 4) for x in ratios],
                    "learn_ratio_vs_gensim": round(float(np.median(ratios)), 4)})
    return out


def run_retrieval(model: Recommender, queries: int = 2000, k: int = 20, seed: int = 0) -> dict[str, Any]:
    """Index vs exact numpy search over the current index keys, same queries (the model's own
    query form: a session vector plus the popularity weight).

    ``index_recall_at_20``: what serving gets from the index as the click stream left it
    (some changed vectors still pending): the top ``candidates`` rows from the index,
    re-scored against the current keys, top 20, against the exact top 20 over the current
    keys. ``index_recall_at_20_raw``: the index's own top 20 without the re-scoring.
    ``..._fresh``: the same after every pending vector is written: those that moved past
    the drift tolerance. A vector that moved less stays as indexed, so over a long stream
    the two agree, and both fall as the tolerance rises.
    """
    model.refresh()
    vec = model.vectors
    n = len(vec)
    keys = model.keys[np.arange(n)]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=min(queries, n))
    qs = np.concatenate([vec.w_in[rows], np.full((len(rows), 1), model.config.popularity_weight,
                                                   dtype=np.float32)], axis=1)
    t0 = time.perf_counter()
    exact = [set(exact_top_k(keys, q, k)[0].tolist()) for q in qs]
    brute = time.perf_counter() - t0
    wide = model.config.candidates

    def recall() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        raw = [model.index.query(q, k)[0] for q in qs]
        took = time.perf_counter() - t0
        served = []
        for q in qs:
            cand = model.index.query(q, wide)[0]
            served.append(cand[np.argsort(-(keys[cand] @ q), kind="stable")[:k]])
        hit = [len(set(a.tolist()) & e) / max(1, len(e)) for a, e in zip(served, exact, strict=True)]
        hit_raw = [len(set(a.tolist()) & e) / max(1, len(e)) for a, e in zip(raw, exact, strict=True)]
        return float(np.mean(hit)), float(np.mean(hit_raw)), took

    served, raw, idx = recall()
    batched, scan = batch_vs_scan(model, keys, qs, wide)
    model.index.refresh(model.keys, np.arange(n))
    fresh, fresh_raw, _ = recall()
    return {"bruteforce_qps": round(len(qs) / brute, 1), "index_qps": round(len(qs) / idx, 1),
            "index_batch_us_per_query": round(batched * 1e6, 2),
            "scan_floor_us_per_query": round(scan * 1e6, 2),
            "index_batch_vs_scan_floor": round(batched / scan, 3),
            "index_recall_at_20": round(served, 4), "index_recall_at_20_raw": round(raw, 4),
            "index_recall_at_20_fresh": round(fresh, 4), "index_recall_at_20_raw_fresh": round(fresh_raw, 4),
            "index_ef": model.index.config.ef, "index_bands": model.index.bands}


def batch_vs_scan(model: Recommender, keys: npt.NDArray[np.float32], qs: npt.NDArray[np.float32],
                  k: int, batch: int = 64, piece: int = 16_384) -> tuple[float, float]:
    """Seconds per query, ``batch`` queries at a time as a worker asks: the index's batched
    answer (``query_batch``, ``k`` candidates), and the scan floor: one float32 BLAS product
    of every key by the batch, a ``piece`` of keys at a time (the product the index's arrays
    screen with, as it runs them), selection left out. No exact search over every key costs
    less on this machine; an index that reads more than its floor scans nearly every key."""
    m = max(1, len(qs) // batch) * min(batch, len(qs))
    parts = [np.ascontiguousarray(qs[lo : lo + batch]) for lo in range(0, m, batch)]
    t0 = time.perf_counter()
    for part in parts:
        model.index.query_batch(part, k)
    batched = time.perf_counter() - t0
    out = np.empty((min(piece, len(keys)), len(parts[0])), dtype=np.float32)
    pieces = [keys[lo : lo + piece] for lo in range(0, len(keys), piece)]
    t0 = time.perf_counter()
    for part in parts:
        q_t = part.T
        for p in pieces:
            np.matmul(p, q_t, out=out[: len(p)])
    scan = time.perf_counter() - t0
    return batched / m, scan / m


def bench_core(path: str | None, clicks: int, items: int, dim: int, seed: int = 0,
               gensim: bool = True, curve: tuple[int, ...] | None = None,
               preload_items: int = 0, batches: tuple[int, ...] = (1,),
               learn_rounds: int = 3, curve_rounds: int = 1) -> list[dict[str, Any]]:
    """One JSON line for ``items``, or with ``curve`` one line per catalogue size: the model
    preloaded with the whole catalogue (``preload``), then the same timed stream of ``clicks``
    clicks over it (``bench_curve``). With several ``batches``, one line per batch size on the
    same stream, in this process, with ``batch_ratio_vs_first`` (clicks/s over the first's)."""
    if curve:
        return bench_curve(path, clicks, dim, curve, seed=seed, gensim=gensim, batch=batches[0],
                           learn_rounds=learn_rounds, rounds=curve_rounds)
    settings = Settings.from_env(dim=dim, seed=seed)
    stream = load_stream(path, clicks, items, seed)
    # Compiling (or loading from numba's cache) the kernels is a start-up cost, paid before
    # the first click as the worker pays it: inside the timed loop it showed as per-click
    # time (on a fresh clone, 30,000 clicks measured 1,036 clicks/s instead of 2,834).
    warmup_s = warm_up(settings.recommender_config(), k=20)
    out_lines: list[dict[str, Any]] = []
    for batch in batches:
        core = run_core(stream, settings, preload_items=preload_items, batch=batch)
        model = core.pop("_model")
        out: dict[str, Any] = {"bench": "core", "source": path or "synthetic", "warmup_s": round(warmup_s, 3),
                               **core}
        out.update(run_retrieval(model, seed=seed))
        out.update(memory_budget(model))
        # The goal's own terms: the whole process at its peak (interpreter included).
        out["peak_rss_vs_budget"] = round(out["peak_rss_mb"] * 2**20 / out["memory_budget_bytes"], 4)
        del model
        out.update(learn_vs_gensim(stream, settings, gensim, learn_rounds))
        if len(batches) > 1:
            first = out_lines[0]["clicks_per_s"] if out_lines else out["clicks_per_s"]
            out["batch_ratio_vs_first"] = round(out["clicks_per_s"] / first, 4)
        out["machine"] = machine()
        out_lines.append(out)
    return out_lines


def bench_curve(path: str | None, clicks: int, dim: int, sizes: tuple[int, ...], seed: int = 0,
                gensim: bool = True, batch: int = 1, learn_rounds: int = 3,
                rounds: int = 1) -> list[dict[str, Any]]:
    """One line per catalogue size, smallest first, from ``rounds`` rounds that each run every
    size in turn, in this process: the sizes of a round are measured minutes apart, not a
    sitting apart. This machine's speed drifts by 2x between sittings, and the smallest size,
    run first, took the drift alone: one run's 1M / 10k read 0.53 and the next 1.06.

    The first round prints every figure (memory at its peak too: sizes only grow within it);
    later rounds time the clicks only. ``curve_clicks_per_s_rounds`` and
    ``curve_ratio_rounds`` list each round's; ``curve_ratio_vs_smallest`` is the median of
    the rounds' ratios, ``curve_clicks_per_s_median`` the median of the size's clicks/s."""
    order = sorted(sizes)
    lines = [bench_core(path, clicks, size, dim, seed=seed, gensim=gensim, preload_items=size,
                        batches=(batch,), learn_rounds=learn_rounds)[0] for size in order]
    per_round = [[float(line["clicks_per_s"]) for line in lines]]
    settings = Settings.from_env(dim=dim, seed=seed)
    for _ in range(1, max(1, rounds)):
        one = []
        for size in order:
            core = run_core(load_stream(path, clicks, size, seed), settings, preload_items=size, batch=batch)
            del core["_model"]
            one.append(float(core["clicks_per_s"]))
        per_round.append(one)
    for i, (size, line) in enumerate(zip(order, lines, strict=True)):
        mine = [r[i] for r in per_round]
        ratios = [r[i] / r[0] for r in per_round]
        line["curve_items"] = size
        line["curve_rounds"] = len(per_round)
        line["curve_clicks_per_s_rounds"] = mine
        line["curve_clicks_per_s_median"] = round(float(np.median(mine)), 1)
        line["curve_ratio_rounds"] = [round(x, 4) for x in ratios]
        line["curve_ratio_vs_smallest"] = round(float(np.median(ratios)), 4)
    return lines


def memory_budget(model: Recommender) -> dict[str, Any]:
    """The model's resident arrays beside the budget (2x the raw float32 vector tables of
    the items it knows, plus the index's own size)."""
    vec = model.vectors
    n = len(vec)
    raw = 2 * n * vec.config.dim * 4
    index_bytes = model.index.nbytes()
    arrays = (vec.w_in.nbytes + vec.w_out.nbytes + vec.vocab.counts.nbytes + vec.replay.inputs.nbytes
              + vec.replay.targets.nbytes + vec.replay.scales.nbytes + vec.sampler._cum.nbytes
              + vec._dirty_mask.nbytes + vec._dirty_rows.nbytes + model.popularity.nbytes
              + sum(a.nbytes for a in vec._base.arrays))
    return {"raw_vector_bytes": raw, "index_bytes": index_bytes, "model_array_bytes": arrays + index_bytes,
            "memory_budget_bytes": 2 * raw + index_bytes,
            "memory_vs_budget": round((arrays + index_bytes) / max(1, 2 * raw + index_bytes), 4)}


def print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        print(json.dumps(line, sort_keys=True), flush=True)
    sys.stdout.flush()
