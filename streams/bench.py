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
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.index import exact_top_k
from models.recommender import Recommender
from models.session import Click, VisitorState, step
from streams.settings import Settings


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


def run_core(stream: list[BenchClick], settings: Settings, k: int = 20) -> dict[str, Any]:
    """Learn + recommend for every click, timing each part."""
    cfg = settings.session_config()
    model = Recommender(settings.recommender_config())
    states: dict[str, VisitorState] = {}
    watermark = -math.inf
    n = len(stream)
    per_click = np.zeros(n, dtype=np.float64)
    learn_t = rec_t = refresh_t = 0.0
    rss0 = rss_mb()
    perf = time.perf_counter
    t_start = perf()
    for i, c in enumerate(stream):
        t0 = perf()
        state, outs = step(states.get(c.visitor_id), Click(c.visitor_id, c.item_id, c.ts, ""), cfg,
                           watermark)
        watermark = max(watermark, c.ts)
        states[c.visitor_id] = state
        acc = outs[-1]
        context = getattr(acc, "context", ())
        t1 = perf()
        model.learn(c.item_id, context)
        t2 = perf()
        model.maybe_refresh(t2)
        t3 = perf()
        if state.session is not None:
            model.recommend(state.session.items, k)
        t4 = perf()
        learn_t += t2 - t1
        refresh_t += t3 - t2
        rec_t += t4 - t3
        per_click[i] = t4 - t0
        if len(states) > 50_000 and i % 10_000 == 0:
            # Keep memory to live sessions, as the worker's sweep does.
            states = {v: s for v, s in states.items()
                      if s.session is not None and watermark - s.session.end <= cfg.gap_s}
    total = perf() - t_start
    vec = model.vectors
    n_items = len(vec)
    table_bytes = vec.w_in.nbytes + vec.w_out.nbytes
    return {
        "clicks": n,
        "items": n_items,
        "dim": vec.config.dim,
        "clicks_per_s": round(n / total, 1),
        "learn_us_per_click": round(learn_t / n * 1e6, 2),
        "recommend_us_per_click": round(rec_t / n * 1e6, 2),
        "index_refresh_us_per_click": round(refresh_t / n * 1e6, 2),
        "p50_ms": round(float(np.percentile(per_click, 50)) * 1e3, 4),
        "p99_ms": round(float(np.percentile(per_click, 99)) * 1e3, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(rss_mb() - rss0, 1),
        "bytes_per_item": round((rss_mb() - rss0) * 2**20 / max(1, n_items), 1),
        "vector_table_bytes_per_item": round(table_bytes / max(1, n_items), 1),
        "_model": model,
    }


def run_learn_only(stream: list[BenchClick], settings: Settings) -> float:
    """Clicks per second for learning alone (sessions by visitor, no index, no serving)."""
    model = Recommender(settings.recommender_config())
    last: dict[str, list[str]] = {}
    window = settings.window
    t0 = time.perf_counter()
    for c in stream:
        ctx = last.setdefault(c.visitor_id, [])
        model.vectors.learn(c.item_id, ctx)
        ctx.append(c.item_id)
        if len(ctx) > window:
            del ctx[0]
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


def run_retrieval(model: Recommender, queries: int = 2000, k: int = 20, seed: int = 0) -> dict[str, Any]:
    """Index vs exact numpy search over the same current vectors, same queries."""
    model.refresh()
    vec = model.vectors
    n = len(vec)
    table = vec.w_out[:n]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=min(queries, n))
    qs = vec.w_in[rows]
    t0 = time.perf_counter()
    exact = [exact_top_k(table, q, k)[0] for q in qs]
    brute = time.perf_counter() - t0
    t0 = time.perf_counter()
    approx = [model.index.query(q, k)[0] for q in qs]
    idx = time.perf_counter() - t0
    recall = float(np.mean([len(set(a.tolist()) & set(e.tolist())) / max(1, len(e))
                            for a, e in zip(approx, exact, strict=True)]))
    return {"bruteforce_qps": round(len(qs) / brute, 1), "index_qps": round(len(qs) / idx, 1),
            "index_recall_at_20": round(recall, 4)}


def bench_core(path: str | None, clicks: int, items: int, dim: int, seed: int = 0,
               gensim: bool = True) -> list[dict[str, Any]]:
    settings = Settings.from_env(dim=dim, seed=seed)
    stream = load_stream(path, clicks, items, seed)
    core = run_core(stream, settings)
    model = core.pop("_model")
    out: dict[str, Any] = {"bench": "core", "source": path or "synthetic", **core}
    out.update(run_retrieval(model, seed=seed))
    del model
    learn_cps = run_learn_only(stream, settings)
    out["learn_only_clicks_per_s"] = round(learn_cps, 1)
    if gensim:
        g = run_gensim(stream, settings)
        out.update(g)
        if g.get("gensim_words_per_s"):
            out["learn_ratio_vs_gensim"] = round(learn_cps / g["gensim_words_per_s"], 4)
    out["machine"] = machine()
    return [out]


def print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        print(json.dumps(line, sort_keys=True), flush=True)
    sys.stdout.flush()
