"""Serving behaviour: fallback for unknown sessions, exclude_seen, seen bonus, determinism."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import topk
from models.index import IndexConfig, exact_top_k
from models.item2vec import Item2VecConfig
from models.recommender import Recommender, RecommenderConfig


def _stream(seed: int, n_sessions: int = 250) -> list[list[str]]:
    """Sessions walking within small topical groups, with re-clicks."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sessions):
        group = int(rng.integers(0, 6))
        items = [f"g{group}i{int(j)}" for j in rng.integers(0, 8, int(rng.integers(2, 7)))]
        out.append(items)
    return out


def _train(cfg: RecommenderConfig, sessions: list[list[str]]) -> Recommender:
    rec = Recommender(cfg)
    t = 0.0
    for items in sessions:
        for pos, item in enumerate(items):
            rec.learn(item, items[:pos])
            t += 0.1
            rec.maybe_refresh(t)
    rec.refresh()
    return rec


CFG = RecommenderConfig(item2vec=Item2VecConfig(dim=16, learning_rate=0.2, min_learning_rate=0.2,
                                                replay_pairs=4, seed=7))


def test_unknown_session_gets_the_popularity_fallback() -> None:
    rec = _train(CFG, _stream(1))
    out = rec.recommend(["never-seen", "nor-this"], 5)
    assert out.source == "fallback"
    assert [i for i, _ in out.items] == [i for i, _ in rec.popular(5)]
    empty = Recommender(CFG).recommend(["x"], 5)
    assert empty.source == "fallback" and empty.items == []


def test_known_session_is_served_by_the_model_within_its_topic() -> None:
    rec = _train(CFG, _stream(2))
    out = rec.recommend(["g3i1", "g3i2"], 5)
    assert out.source == "model" and len(out.items) == 5
    assert sum(i.startswith("g3") for i, _ in out.items) >= 4


def test_exclude_seen_is_honoured() -> None:
    session = ["g2i0", "g2i1", "g2i2"]
    keep = _train(RecommenderConfig(item2vec=CFG.item2vec, seen_boost=10.0), _stream(3))
    items = [i for i, _ in keep.recommend(session, 10).items]
    assert items[0] == "g2i2"  # a big re-click bonus puts the latest item first
    drop = _train(RecommenderConfig(item2vec=CFG.item2vec, seen_boost=10.0, exclude_seen=True), _stream(3))
    items = [i for i, _ in drop.recommend(session, 10).items]
    assert len(items) == 10 and not set(items) & set(session)


def test_same_seed_same_lists() -> None:
    a = _train(CFG, _stream(4))
    b = _train(CFG, _stream(4))
    for session in (["g0i1"], ["g1i3", "g1i4"], ["g5i0", "zzz", "g4i7"]):
        assert a.recommend(session, 20) == b.recommend(session, 20)
    np.testing.assert_array_equal(a.vectors.w_out, b.vectors.w_out)


def test_popular_is_exact_top_by_decayed_count() -> None:
    rec = Recommender(CFG)
    for item, n in (("a", 3), ("b", 5), ("c", 1)):
        for _ in range(n):
            rec.learn(item, ())
    assert [i for i, _ in rec.popular(3)] == ["b", "a", "c"]
    assert abs(sum(s for _, s in rec.popular(3)) - 1.0) < 1e-9


def test_popular_asks_for_more_than_the_catalogue() -> None:
    """A cold model asked for more popular items than it knows answers with what it knows."""
    from models.recommender import Recommender

    r = Recommender()
    for i, item in enumerate(["a", "b", "c", "d", "e"]):
        r.learn(item, [])
        assert len(r.popular(50)) == i + 1
    assert {i for i, _ in r.recommend(["zz"], 20).items} == {"a", "b", "c", "d", "e"}


def test_reverse_direction_ranks_what_usually_comes_before() -> None:
    """Sessions are always p_i -> n_i: the forward term has nothing to say after n_i (it is
    never followed), the reverse term knows p_i goes with it."""
    sessions = [[f"p{i}", f"n{i}"] for i in range(12)] * 30
    for rw, expect in ((0.0, False), (1.0, True)):
        cfg = RecommenderConfig(
            item2vec=Item2VecConfig(dim=16, learning_rate=0.2, min_learning_rate=0.2,
                                    replay_pairs=4, seed=3),
            reverse_weight=rw, seen_boost=0.0)
        rec = _train(cfg, sessions)
        found = 0
        for i in range(12):
            top = [it for it, _ in rec.recommend([f"n{i}"], 3).items]
            found += f"p{i}" in top
        assert (found >= 10) is expect, (rw, found)


def test_ranking_knobs_come_from_the_environment() -> None:
    from streams.settings import Settings

    cfg = Settings.from_env({"SESSIONREC_REVERSE_WEIGHT": "0.25", "SESSIONREC_REVERSE_ITEMS": "3"}
                            ).recommender_config()
    assert (cfg.reverse_weight, cfg.reverse_items) == (0.25, 3)
    # The settings' defaults are the model's defaults.
    default, model = Settings().recommender_config(), RecommenderConfig()
    for name in ("reverse_weight", "reverse_items", "recency_decay", "seen_boost", "seen_decay",
                 "popularity_weight", "candidates", "query_items"):
        assert getattr(default, name) == getattr(model, name), name


def test_every_changed_vector_is_in_the_index_after_a_refresh() -> None:
    """By default a refresh writes every vector that moved, so a change is visible in results
    within one refresh interval; a write budget leaves some pending (the trade it offers)."""
    sessions = _stream(3, 400)
    fresh = _train(CFG, sessions)
    n = len(fresh.vectors)
    assert len(fresh.index) == n
    assert fresh.index.select_stale(fresh.keys, np.arange(n)).size == 0
    budget = Recommender(RecommenderConfig(item2vec=CFG.item2vec, index_writes_per_click=0.1))
    for items in sessions:
        for pos, item in enumerate(items):
            budget.learn(item, items[:pos])
            budget.refresh()
    assert budget.index.select_stale(budget.keys, np.arange(len(budget.vectors))).size > 0


def _indexed(rec: Recommender) -> set[int]:
    return {int(r) for r in np.flatnonzero(rec.index._label >= 0)}


def test_a_refresh_is_written_in_parts_over_its_spread() -> None:
    """The rows a refresh takes are written in step with the clock over ``refresh_spread``
    of the interval (one batch no longer carries the whole refresh), what is left is written
    before the next refresh takes more, calls a spread apart write at once, and the parts
    index what one write would have."""
    cfg = RecommenderConfig(item2vec=CFG.item2vec, refresh_interval_s=1.0, refresh_spread=1.0)
    parts, whole = Recommender(cfg), Recommender(replace(cfg, refresh_spread=0.0))
    sessions = _stream(5, 120)

    def learn(clicks: list[tuple[str, list[str]]]) -> None:
        for rec in (parts, whole):
            rec.learn_many(clicks)

    for rec in (parts, whole):
        rec.maybe_refresh(9.0)  # nothing yet
    for items in sessions:
        learn([(item, items[:pos]) for pos, item in enumerate(items)])
    for rec in (parts, whole):
        assert rec.maybe_refresh(9.9) == 0  # not due: the batches come every 0.1-0.3 s
    assert parts.maybe_refresh(10.0) == 0  # taken, nothing due yet
    taken = parts._round.copy()
    assert len(taken) == len(parts.vectors) > 40 and parts.indexing and parts.vectors.changed == 0
    assert whole.maybe_refresh(10.0) == len(taken) and not whole.indexing
    written = parts.maybe_refresh(10.2)  # a fifth of the spread: a fifth of the rows
    assert written == int(np.ceil(len(taken) * 0.2))
    assert _indexed(parts) == set(taken[:written].tolist())
    parts.maybe_refresh(10.5)
    parts.maybe_refresh(10.8)
    assert parts.indexing and len(_indexed(parts)) < len(taken)
    # Learning meanwhile: the next refresh first writes the rest, then takes the new rows.
    learn([("g0i1", ["g0i2"]), ("g1i3", ["g1i4"])])
    left = len(taken) - len(_indexed(parts))
    assert parts.maybe_refresh(11.0) == left > 0
    assert _indexed(parts) == set(taken.tolist())
    assert parts.indexing and 0 < len(parts._round) <= 4 * (1 + 2 * 5)
    whole.maybe_refresh(11.0)
    # After a pause as long as the spread (clicks stopped; a timer calls), a refresh is
    # written at once: there are no batches to spread it over.
    learn([("g2i1", ["g2i2"])])
    assert parts.maybe_refresh(12.0) > 0 and not parts.indexing
    whole.maybe_refresh(12.0)
    n = len(parts.vectors)
    np.testing.assert_array_equal(parts.keys[np.arange(n)], whole.keys[np.arange(n)])
    assert parts.index.select_stale(parts.keys, np.arange(n)).size == 0
    probes = [s[:2] for s in sessions[:30]]
    assert [parts.recommend(p, 10).items for p in probes] == [whole.recommend(p, 10).items for p in probes]


def test_refresh_writes_what_a_spread_refresh_left() -> None:
    rec = Recommender(RecommenderConfig(item2vec=CFG.item2vec, refresh_interval_s=1.0))
    rec.maybe_refresh(-1.0)
    for items in _stream(6, 60):
        rec.learn_many([(item, items[:pos]) for pos, item in enumerate(items)])
    rec.maybe_refresh(-0.1)
    rec.maybe_refresh(0.0)
    rec.maybe_refresh(0.1)
    assert rec.indexing
    rec.learn("g2i1", ["g2i2"])
    rec.refresh()
    assert not rec.indexing and rec.vectors.changed == 0
    assert len(_indexed(rec)) == len(rec.vectors)


def test_background_writes_index_what_inline_writes_do() -> None:
    """With the writer thread, learning goes on while the index is written; once the last
    write is flushed every changed vector is indexed, the index holds the same vectors as
    with inline writes, and the sessions get the same lists."""
    sessions = _stream(3, 400)
    inline = _train(CFG, sessions)
    background = _train(RecommenderConfig(item2vec=CFG.item2vec, background_writes=True), sessions)
    assert background._writer is not None  # the writes did go through the thread
    background.flush()
    assert not background.writing
    n = len(background.vectors)
    assert len(background.index) == n == len(inline.vectors)
    assert background.index.select_stale(background.keys, np.arange(n)).size == 0
    np.testing.assert_array_equal(background.keys[np.arange(n)], inline.keys[np.arange(n)])
    probes = [s[:2] for s in sessions[:40]]
    assert [background.recommend(p, 10).items for p in probes] == \
        [inline.recommend(p, 10).items for p in probes]


def test_a_background_write_that_fails_is_raised_not_lost() -> None:
    rec = _train(RecommenderConfig(item2vec=CFG.item2vec, background_writes=True), _stream(4, 50))
    rec.flush()

    def broken(*_: object) -> int:
        raise RuntimeError("index full")

    rec.index.write = broken  # type: ignore[method-assign,assignment]
    rec.learn("g0i1", ["g0i2"])
    rec.refresh()
    rec._writer.shutdown(wait=True)  # type: ignore[union-attr]
    assert not rec.writing  # asking does not consume the failure (metrics ask it)
    with pytest.raises(RuntimeError, match="index full"):
        rec.flush()


def test_a_background_write_that_fails_is_raised_by_the_next_part() -> None:
    """Refreshes in parts hand the writer thread one write after another: a failed one is
    raised by the call that would hand over the next, not replaced by it."""
    rec = _train(RecommenderConfig(item2vec=CFG.item2vec, background_writes=True,
                                   refresh_interval_s=1.0), _stream(4, 50))
    rec.flush()
    calls = 0
    write = rec.index.write

    def fails_once(*args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("index full")
        return write(*args)

    rec.index.write = fails_once  # type: ignore[method-assign,assignment]
    rec.learn_many([("g0i1", ["g0i2"]), ("g1i1", ["g1i2"]), ("g2i1", ["g2i2"])])
    with pytest.raises(RuntimeError, match="index full"):
        for t in (100.0, 100.6, 101.0, 101.6, 102.0):
            rec.maybe_refresh(t)
            while rec.writing:  # each write ends before the next call, failed or not
                time.sleep(0.001)
            rec.learn("g0i3", ["g0i4"])
    assert calls == 1


def test_a_snapshot_restores_the_model_exactly(tmp_path: Path) -> None:
    """Arrays only (no pickle), through a real .npz file; the restored model recommends what
    the original does, and both go on learning the same way."""
    sessions = _stream(5, 300)
    original = _train(CFG, sessions[:200])
    arrays: dict[str, Any] = original.state()  # Any: savez would check **kwds against allow_pickle
    np.savez(tmp_path / "model.npz", **arrays)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as f:
        restored = Recommender.restore(dict(f), CFG)
    assert restored.vectors.vocab.ids == original.vectors.vocab.ids
    assert len(restored.index) == len(original.vectors)
    probes = [s[:2] for s in sessions[200:230]]

    def lists(model: Recommender) -> list[list[tuple[str, float]]]:
        return [model.recommend(p, 10).items for p in probes]

    assert lists(restored) == lists(original)
    for model in (original, restored):
        for items in sessions[200:]:
            for pos, item in enumerate(items):
                model.learn(item, items[:pos])
        model.refresh()
    assert lists(restored) == lists(original)
    assert restored.vectors.version == original.vectors.version


def test_a_snapshot_with_an_int64_negatives_guide_goes_on_the_same_way() -> None:
    """Snapshots written before row numbers became int32 hold an int64 guide table: it is
    read back as int32, and learning goes on exactly as from a new snapshot."""
    sessions = _stream(5, 300)
    state = _train(CFG, sessions[:200]).state()
    assert state["sampler_guide"].dtype == np.int32
    new = Recommender.restore(dict(state), CFG)
    old = Recommender.restore({**state, "sampler_guide": state["sampler_guide"].astype(np.int64)}, CFG)
    assert old.vectors.sampler._guide.dtype == np.int32
    for model in (new, old):
        for items in sessions[200:]:
            for pos, item in enumerate(items):
                model.learn(item, items[:pos])
    n = len(new.vectors)
    np.testing.assert_array_equal(new.vectors.w_out[:n], old.vectors.w_out[:n])


def test_a_snapshot_of_another_dimension_is_refused() -> None:
    state = _train(CFG, _stream(6, 20)).state()
    with pytest.raises(ValueError, match="dim"):
        Recommender.restore(state, RecommenderConfig(item2vec=Item2VecConfig(dim=8)))


def test_a_snapshot_loads_the_index_instead_of_rebuilding_it(tmp_path: Path) -> None:
    """The HNSW graphs come back from the snapshot (hnswlib's own format, deleted marks and
    all): nothing is re-inserted, and every query answers as before. With other index
    settings the saved graphs are not used and the index is rebuilt."""
    cfg = RecommenderConfig(item2vec=CFG.item2vec, index=IndexConfig(exact_below=0), min_count=1)
    sessions = _stream(9, 400)
    original = _train(cfg, sessions)
    assert original.index.inserts > len(original.vectors)  # some vectors were rewritten
    arrays: dict[str, Any] = original.state()  # Any: savez would check **kwds against allow_pickle
    np.savez(tmp_path / "model.npz", **arrays)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as f:
        state = dict(f)
    restored = Recommender.restore(state, cfg)
    assert restored.index.inserts == 0 and len(restored.index) == len(original.index)
    rng = np.random.default_rng(0)
    for _ in range(30):
        q = rng.standard_normal(CFG.item2vec.dim + 1).astype(np.float32)
        got, want = restored.index.query(q, 20), original.index.query(q, 20)
        np.testing.assert_array_equal(got[0], want[0])
    other = RecommenderConfig(item2vec=CFG.item2vec, index=IndexConfig(exact_below=0, m=8), min_count=1)
    rebuilt = Recommender.restore(state, other)
    assert rebuilt.index.inserts == len(rebuilt.vectors)


def test_a_snapshot_of_array_bands_leaves_the_index_out_and_rebuilds_it(tmp_path: Path) -> None:
    """Bands that are arrays are rebuilt from the vectors on restore instead of saved (they
    load slower than they rebuild, and doubled the file): the restored index holds every
    vector as it is now, and answers as exact search over them. One graph among them and
    the index is saved."""
    original = _train(CFG, _stream(9, 400))
    assert original.index.graphs == 0 and len(original.index) > 0
    state = original.state()
    assert not any(name.startswith("index_") for name in state)
    assert len(original.state(index=True)["index_label"]) > 0  # still there when asked
    restored = Recommender.restore(state, CFG)
    assert restored.index.inserts == len(restored.vectors) == len(original.vectors)
    keys = original.keys[np.arange(len(original.vectors))]
    rng = np.random.default_rng(1)
    for _ in range(30):
        q = rng.standard_normal(CFG.item2vec.dim + 1).astype(np.float32)
        np.testing.assert_array_equal(restored.index.query(q, 20)[0], exact_top_k(keys, q, 20)[0])
    graphs = _train(RecommenderConfig(item2vec=CFG.item2vec, index=IndexConfig(exact_below=0)),
                    _stream(9, 100))
    assert graphs.index.graphs > 0 and "index_label" in graphs.state()


_BATCH_CFGS = {
    "default": CFG,
    "exclude_seen": RecommenderConfig(item2vec=CFG.item2vec, exclude_seen=True),
    "long_queries": RecommenderConfig(item2vec=CFG.item2vec, query_items=10, reverse_items=3,
                                      recency_decay=0.7),
}
_BATCH_MODELS: dict[str, Recommender] = {}


def _batch_model(name: str) -> Recommender:
    if name not in _BATCH_MODELS:
        rec = _train(_BATCH_CFGS[name], _stream(8, 300))
        # Learn a little after the refresh, so the index is behind the vectors as when serving.
        for items in _stream(9, 20):
            for pos, item in enumerate(items):
                rec.learn(item, items[:pos])
        _BATCH_MODELS[name] = rec
    return _BATCH_MODELS[name]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(_BATCH_CFGS)),
       sessions=st.lists(st.lists(st.sampled_from([f"g{g}i{i}" for g in range(6) for i in range(8)]
                                                  + ["unknown", "other"]), max_size=14),
                         min_size=1, max_size=12),
       k=st.integers(1, 25))
def test_a_batch_gets_what_each_session_gets_alone(name: str, sessions: list[list[str]], k: int) -> None:
    """``recommend_many`` is ``recommend`` per session: same items, same scores, same source."""
    rec = _batch_model(name)
    assert rec.recommend_many(sessions, k) == [rec.recommend(s, k) for s in sessions]


def test_the_popular_list_stays_exact_click_by_click() -> None:
    """The top list is updated in place for the clicked item only; after every click it must
    equal a full sort of the decayed counts (ties: smaller row first), evictions included."""

    class Small(Recommender):
        popular_keep = 7

    rec = Small(RecommenderConfig(item2vec=CFG.item2vec, popularity_half_life_clicks=50.0))
    rng = np.random.default_rng(11)
    for item in rng.zipf(1.3, 600) % 40:
        rec.learn(f"x{item}", ())
        n = len(rec.vectors)
        pop = rec.popularity[:n]
        rows = np.arange(n)
        want = rows[np.lexsort((rows, -pop))][:7]
        assert rec._top.tolist() == want.tolist()



def test_decayed_counts_hold_across_batches_and_rescaling() -> None:
    """Each click weighs ``growth`` times the one before, whatever the batches and however
    often the weights are divided down (a small ``pop_limit`` forces it every few clicks):
    the shares equal those of a plain per-click sum, and the top list a full sort."""

    class Rescaling(Recommender):
        pop_limit = 50.0
        popular_keep = 5

    half_life = 8.0
    rec = Rescaling(RecommenderConfig(item2vec=CFG.item2vec, popularity_half_life_clicks=half_life))
    rng = np.random.default_rng(5)
    items = [f"p{i}" for i in rng.zipf(1.4, 300) % 25]
    growth = 2.0 ** (1.0 / half_life)
    want: dict[str, float] = {}
    lo = 0
    while lo < len(items):
        size = int(rng.integers(1, 40))
        rec.learn_many([(i, ()) for i in items[lo : lo + size]])
        lo += size
    for age, item in enumerate(reversed(items)):
        want[item] = want.get(item, 0.0) + growth**-age
    total = sum(want.values())
    got = dict(rec.popular(25))
    assert set(got) == set(want)
    for item, share in want.items():
        assert abs(got[item] - share / total) < 1e-9
    n = len(rec.vectors)
    rows = np.arange(n)
    pop = rec.popularity[:n]
    assert rec._top.tolist() == rows[np.lexsort((rows, -pop))][:5].tolist()

def test_score_gives_every_seen_row_its_bonus_in_any_order() -> None:
    """``score`` with unsorted, repeated rows: each position of a session item gets the
    bonus for its recency rank, the others none."""
    rec = _batch_model("default")
    r1, r2 = rec.vectors.row("g1i1"), rec.vectors.row("g1i2")
    assert r1 is not None and r2 is not None
    seen = {r1: 0, r2: 2}
    rows = np.asarray([rec.vectors.row(i) for i in ("g2i0", "g1i2", "g1i1", "g1i2", "g3i3")], dtype=np.int64)
    q = rec.vectors.w_in[rows[0]].copy()
    plain = rec.score(q, rows, {})
    bonus = rec.score(q, rows, seen) - plain
    want = np.asarray([0, 0.25, 1, 0.25, 0], dtype=np.float32) * np.float32(rec.config.seen_boost)
    np.testing.assert_allclose(bonus, want, atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), exclude_seen=st.booleans(), reverse=st.sampled_from([0.0, 1.0]),
       k=st.integers(0, 12))
def test_the_compiled_ranking_is_the_numpy_reference(seed: int, exclude_seen: bool, reverse: float,
                                                     k: int) -> None:
    """``topk.rank`` (what ``recommend`` ranks with) gives, per session, the rows and scores
    of the numpy reference: candidates and session items unique and sorted, ``score``d,
    stable-sorted best first, session items dropped under ``exclude_seen``. Vectors in
    eighths, so every dot product is exact in float32 in any order and the two must agree
    bit for bit, ties included."""
    rng = np.random.default_rng(seed)
    n, dim, nq = 40, 8, 5
    cfg = RecommenderConfig(item2vec=Item2VecConfig(dim=dim), reverse_weight=reverse,
                            exclude_seen=exclude_seen)
    rec = Recommender(cfg)
    for i in range(n):
        rec.vectors.upsert(f"x{i}")
    vec = rec.vectors
    vec.w_in[:n] = rng.integers(-4, 5, (n, dim)) / 8
    vec.w_out[:n] = rng.integers(-4, 5, (n, dim)) / 8
    vec.vocab.counts[:n] = rng.integers(0, 4, n)
    q = (rng.integers(-4, 5, (nq, dim)) / 8).astype(np.float32)
    q_out = (rng.integers(-4, 5, (nq, dim)) / 8).astype(np.float32)
    labels = rng.integers(-1, n, (nq, 9))  # -1: padding; repeats on purpose
    labels[rng.random(nq) < 0.3] = -1  # no candidate from the index: only the session's own
    seens = [{int(r): j for j, r in enumerate(rng.choice(n, int(rng.integers(0, 4)), replace=False))}
             for _ in range(nq)]
    for only in np.flatnonzero(rng.random(nq) < 0.3):  # the index found only the session's own items
        labels[only] = -1
        labels[only, : len(seens[only])] = list(seens[only])
    start = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seens], out=start[1:])
    seen_rows = np.asarray([r for s in seens for r in s], dtype=np.int64)
    ranks = np.asarray([j for s in seens for j in s.values()], dtype=np.int64)
    boost = (cfg.seen_boost * np.float64(cfg.seen_decay) ** ranks).astype(np.float32)
    rows = np.full((nq, k), -7, dtype=np.int64)
    scores = np.zeros((nq, k), dtype=np.float32)
    got = np.zeros(nq, dtype=np.int64)
    topk.rank(vec.w_in, vec.w_out, vec.vocab.counts, q, q_out, reverse, cfg.popularity_weight,
              labels, seen_rows, boost, start, exclude_seen, rows, scores, got)
    for b in range(nq):
        own = list(seens[b]) if not exclude_seen else []
        cand = np.unique(np.concatenate([labels[b][labels[b] >= 0], np.asarray(own, dtype=np.int64)]))
        if cand.size == 0:
            assert got[b] == -1
            continue
        ref = rec.score(q[b], cand, {} if exclude_seen else seens[b], q_out[b] if reverse else None)
        order = [j for j in np.argsort(-ref, kind="stable")
                 if int(cand[j]) not in seens[b] or not exclude_seen]
        want = order[:k]
        assert got[b] == len(want)
        assert rows[b, : got[b]].tolist() == cand[want].tolist()
        assert scores[b, : got[b]].tobytes() == ref[want].tobytes()


WARM_UP_CHECK = """
import json, sys
from numba.core.registry import CPUDispatcher
from models import kernels, topk, recommender

def compiled():
    return {f"{mod.__name__}.{name}": len(obj.signatures)
            for mod in (kernels, topk) for name, obj in vars(mod).items()
            if isinstance(obj, CPUDispatcher)}

if sys.argv[1] == "warm":
    recommender.warm_up()
before = compiled()
model = recommender.Recommender()
ids = [f"i{i}" for i in range(3000)]  # more than exact_below: some bands are walked graphs
for i, item in enumerate(ids):
    model.learn(item, ids[max(0, i - 2) : i])
model.refresh()
model.recommend(ids[:4], 20)
model.recommend_many([ids[:3], ids[100:104], ["unknown"]], 20)
print(json.dumps({k: v for k, v in compiled().items() if v != before[k]}))
"""


def _kernels_compiled_by_clicks(warm: bool) -> dict[str, int]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", WARM_UP_CHECK, "warm" if warm else "cold"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_warm_up_leaves_no_kernel_for_the_first_clicks_to_compile() -> None:
    """In a fresh interpreter, after ``warm_up`` the click path (learn, refresh, recommend,
    recommend_many, small and walked bands) loads no compiled kernel; without it, it does
    (the check sees them)."""
    assert _kernels_compiled_by_clicks(warm=True) == {}
    assert _kernels_compiled_by_clicks(warm=False) != {}


def test_an_upgrade_reads_the_snapshot_an_earlier_version_wrote(tmp_path: Path) -> None:
    """The snapshot moved to a new name (v2); the old name is read when no v2 exists, and
    the v2 one wins once written."""
    from streams import snapshot

    model = Recommender(RecommenderConfig(item2vec=Item2VecConfig(dim=8)))
    for s in (["a", "b", "c"], ["b", "c"]):
        for pos, item in enumerate(s):
            model.learn(item, s[:pos])
    arrays: dict[str, Any] = model.state()  # Any: savez would check **kwds against allow_pickle
    np.savez(tmp_path / snapshot.OLDER[0], **arrays)
    assert snapshot.FILENAME not in snapshot.OLDER
    old = snapshot.read(tmp_path)
    assert old is not None and int(old["clicks_learned"][0]) == 5
    model.learn("d", ["c"])
    snapshot.save(model.state(), tmp_path)
    new = snapshot.read(tmp_path)
    assert new is not None and int(new["clicks_learned"][0]) == 6


def test_index_keys_gathered_in_pieces_are_the_keys_gathered_at_once() -> None:
    """Keys come in pieces (a bounded temporary at 1M rows); every row, in any order and
    repeated, lands where a single gather puts it: its output vector, then log(1 + clicks)."""
    rec = Recommender(RecommenderConfig(item2vec=Item2VecConfig(dim=8, seed=1)))
    rec.learn_many([(f"i{j}", [f"i{j - 1}", f"i{j - 2}"]) for j in range(2, 40)])
    vec = rec.vectors
    rows = np.random.default_rng(0).integers(0, len(vec), 101)
    expected = np.concatenate([vec.w_out[rows], np.log1p(vec.vocab.counts[rows])[:, None]], axis=1)
    rec.keys.piece = 7
    np.testing.assert_array_equal(rec.keys[rows], expected.astype(np.float32))
    assert rec.keys[np.arange(0)].shape == (0, 9)
