"""Several copies of one model: what each learns reaches the others through deltas."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import item2vec
from models.item2vec import Item2VecConfig, ItemVectors, VectorDelta
from models.recommender import Recommender, RecommenderConfig
from streams.bench import rss_mb

CFG = Item2VecConfig(dim=8, shared=True, replay_pairs=3, replay_buffer=50)


def sessions(seed: int, n: int, items: int = 30, prefix: str = "i") -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[f"{prefix}{j}" for j in rng.integers(0, items, rng.integers(2, 6))] for _ in range(n)]


def learn(vec: ItemVectors | Recommender, session: list[str]) -> None:
    for pos, item in enumerate(session):
        vec.learn(item, session[:pos])


def same_model(a: ItemVectors, b: ItemVectors) -> None:
    """Same items, counts and output vectors; input vectors differ only by each copy's own
    random start (at most 0.5 / dim per coordinate)."""
    assert set(a.vocab.ids) == set(b.vocab.ids)
    rows_b: list[int] = []
    for i in a.vocab.ids:
        r = b.row(i)
        assert r is not None  # same id set, so every item of a has a row in b
        rows_b.append(r)
    n = len(a)
    if n == 0:
        return
    np.testing.assert_allclose(a.vocab.counts[:n], b.vocab.counts[rows_b])
    np.testing.assert_allclose(a.w_out[:n], b.w_out[rows_b], atol=1e-5)
    assert np.abs(a.w_in[:n] - b.w_in[rows_b]).max() <= 1.0 / CFG.dim + 1e-5


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "a->b", "b->a", "a~>b", "b~>a"]), min_size=1, max_size=16),
       st.sampled_from([0.0, 0.05, 10.0]))
def test_copies_that_exchange_every_delta_hold_one_model(plan: list[str], min_drift: float) -> None:
    """Any interleaving of learning and exchanging, whole or in parts of a few rows (``~>``,
    learning going on between the parts), with or without held-back small moves: once
    both flush their pending change, the two copies are the same model."""
    a, b = ItemVectors(CFG), ItemVectors(Item2VecConfig(**{**CFG.__dict__, "seed": 1}))
    streams = {"a": iter(sessions(0, 100)), "b": iter(sessions(1, 100))}
    for step in plan:
        if step in ("a", "b"):
            learn(a if step == "a" else b, next(streams[step]))
        else:
            src, dst = (a, b) if step[0] == "a" else (b, a)
            dst.merge(src.share(min_drift, limit=3 if "~" in step else 0))
    for src, dst in ((a, b), (b, a)):
        if src.sharing:  # the rest of a pass in parts, then a whole one
            dst.merge(src.share())
        assert not src.sharing
        dst.merge(src.share())
    same_model(a, b)
    assert len(a.share()) == len(b.share()) == 0  # nothing echoes back


def test_a_share_in_parts_ends_however_fast_learning_adds_rows() -> None:
    """A pass looks at the rows changed when it began: learning between its parts (more
    rows than a part looks at) waits for the next pass instead of keeping this one going."""
    vec = ItemVectors(CFG)
    for s in sessions(7, 50, items=2000):
        learn(vec, s)
    begun, limit, parts = vec._base.n, 64, 0
    more = iter(sessions(8, 4000, items=2000))
    while True:
        vec.share(limit=limit)
        parts += 1
        if not vec.sharing:
            break
        for _ in range(2):
            learn(vec, next(more))
    assert parts == -(-begun // limit)
    assert 0 < vec._base.n < begun + parts * 2 * 6 * vec._base_room  # what came meanwhile


def test_a_snapshot_taken_between_parts_of_a_share_goes_on_from_it() -> None:
    """A restored copy goes on from what was shared, and the deltas published after its
    snapshot bring back the rest: rows a share in parts has sent are shared in a snapshot
    taken between its parts (not rolled back, nor sent again)."""
    a = ItemVectors(CFG)
    for s in sessions(5, 60):
        learn(a, s)
    first = a.share(limit=5)
    assert len(first) == 5 and a.sharing
    restored = ItemVectors(CFG)
    restored.restore(a.state())
    rest = a.share()
    assert not a.sharing and len(rest) > 0 and not set(first.ids) & set(rest.ids)
    restored.merge(rest)
    n = len(a)
    np.testing.assert_allclose(restored.w_out[:n], a.w_out[:n], atol=1e-6)
    np.testing.assert_allclose(restored.w_in[:n], a.w_in[:n], atol=1e-6)
    np.testing.assert_allclose(restored.vocab.counts[:n], a.vocab.counts[:n])
    assert not restored.w_in[n:].any() and not restored.w_out[n:].any()  # no stray writes


def test_small_moves_wait_and_are_never_dropped() -> None:
    a, b = ItemVectors(CFG), ItemVectors(Item2VecConfig(**{**CFG.__dict__, "seed": 1}))
    for s in sessions(0, 200):
        learn(a, s)
    first = a.share()
    b.merge(first)
    for s in sessions(2, 5):  # a few clicks move a few rows a little, many not at all
        learn(a, s)
    held = a.share(min_drift=0.05)
    rest = a.share()
    assert len(held) > 0 and len(rest) > 0  # some waited
    assert not set(held.ids) & {i for i, c in zip(rest.ids, rest.d_counts, strict=True) if c}
    b.merge(held)
    b.merge(rest)
    same_model(a, b)


def test_a_bad_delta_is_refused_whole() -> None:
    vec = ItemVectors(CFG)
    good = np.zeros((1, CFG.dim), dtype=np.float32)
    with pytest.raises(ValueError, match="dim"):
        vec.merge(VectorDelta(["x"], np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32),
                              np.ones(1, np.float32)))
    with pytest.raises(ValueError, match="non-finite"):
        vec.merge(VectorDelta(["x"], good + np.nan, good, np.ones(1, np.float32)))
    with pytest.raises(ValueError, match="length"):
        vec.merge(VectorDelta(["x", "y"], good, good, np.ones(1, np.float32)))
    assert len(vec) == 0


def test_split_keeps_every_row_once() -> None:
    vec = ItemVectors(CFG)
    for s in sessions(3, 50):
        learn(vec, s)
    delta = vec.share()
    parts = delta.split(7)
    assert all(len(p) <= 7 for p in parts)
    assert [i for p in parts for i in p.ids] == delta.ids
    np.testing.assert_array_equal(np.concatenate([p.d_out for p in parts]), delta.d_out)


def test_a_worker_serves_what_another_learned() -> None:
    """Items clicked only on one copy: the other recommends from them, and counts their
    clicks in its popularity fallback."""
    cfg = RecommenderConfig(item2vec=CFG, min_count=1)
    a, b = Recommender(cfg), Recommender(cfg)
    for _ in range(60):
        learn(a, ["shoe", "sock", "lace"])
    for s in sessions(4, 40, prefix="b"):
        learn(b, s)
    assert b.recommend(["shoe"], 5).source == "fallback"
    b.merge(a.share())
    a.refresh()
    b.refresh()
    mine, theirs = a.recommend(["shoe"], 3), b.recommend(["shoe"], 40)
    assert mine.source == theirs.source == "model"
    # The same order over a's items (b's own items may come in between).
    assert [i for i, _ in theirs.items if i in {"shoe", "sock", "lace"}] == [i for i, _ in mine.items]
    assert theirs.items[0][0] == mine.items[0][0]
    assert b.popular(1)[0][0] in {"shoe", "sock", "lace"}


def test_restoring_a_shared_snapshot_drops_only_what_was_not_shared() -> None:
    a = ItemVectors(CFG)
    for s in sessions(5, 50):
        learn(a, s)
    sent = a.share()
    for s in sessions(6, 10):
        learn(a, s)  # not shared yet when the snapshot is taken
    state = a.state()
    back = ItemVectors(CFG)
    back.restore(state)
    assert len(back.share()) == 0
    other = ItemVectors(Item2VecConfig(**{**CFG.__dict__, "seed": 3}))
    other.merge(sent)
    same_model(back, other)  # exactly what the others have
    # A snapshot from a model that never shared is news to the others, all of it.
    solo = ItemVectors(Item2VecConfig(dim=8))
    for s in sessions(7, 20):
        learn(solo, s)
    fresh = ItemVectors(CFG)
    fresh.restore(solo.state())
    assert set(fresh.share().ids) == set(solo.vocab.ids)


def test_a_direct_table_write_announced_by_will_write_is_shared() -> None:
    vec = ItemVectors(CFG)
    learn(vec, ["a", "b"])
    vec.share()
    row = vec.row("a")
    assert row is not None
    vec.will_write(np.array([row]))
    vec.w_out[row] += 1.0
    delta = vec.share(min_drift=0.01)
    assert delta.ids == ["a"] and np.allclose(delta.d_out, 1.0)
    # A write every copy already has (a preload) reaches the index but is not shared.
    vec.will_write(np.array([row]), share=False)
    vec.w_out[row] += 1.0
    assert len(vec.share()) == 0 and row in vec.take_dirty()


def test_the_shared_base_holds_only_the_rows_changed_since_the_last_share(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy of what was last shared is kept per changed row, not for the whole table."""
    monkeypatch.setattr(item2vec, "BASE_START", 1024)  # the buffers' own growth and shrink
    vec = ItemVectors(CFG)
    for s in sessions(8, 300, items=2000):
        learn(vec, s)
    vec.share()
    assert vec._base.n == 0
    before_in, before_out = vec.w_in[: len(vec)].copy(), vec.w_out[: len(vec)].copy()
    learn(vec, vec.vocab.ids[:3])  # known items: no new rows
    moved = np.flatnonzero((vec.w_in[: len(vec)] != before_in).any(axis=1)
                           | (vec.w_out[: len(vec)] != before_out).any(axis=1))
    kept = vec._base.rows[: vec._base.n]
    assert set(moved.tolist()) <= set(kept.tolist()) and len(kept) <= vec._base_room * 3
    # What the base holds for each kept row is the row as it was before the click.
    np.testing.assert_array_equal(vec._base.w_out[: vec._base.n], before_out[kept])
    assert len(vec.share()) == len(kept) and vec._base.n == 0
    # A steady load keeps its buffers: shrunk after each share to what that share kept,
    # they grew back by doubling (a copy of the whole base) every second.
    for s in sessions(13, 6000, items=20_000):  # every item known: each pass sees as many rows
        learn(vec, s)
    vec.share()
    load = sessions(12, 3000, items=20_000)
    sizes = []
    for part in range(6):
        for s in load[part * 500 : (part + 1) * 500]:
            learn(vec, s)
        vec.share()
        sizes.append(vec._base.cap)
    assert sizes[0] > 4096 and len(set(sizes)) == 1
    # A long gap between shares grows the buffers; once a share after it has looked at
    # no more than a quarter of them, the room is given back.
    for s in sessions(11, 3000, items=20_000):
        learn(vec, s)
    grown = vec._base.cap
    vec.share()
    assert grown > sizes[-1] and vec._base.cap == grown  # that share looked at all of them
    learn(vec, vec.vocab.ids[:3])
    vec.share()
    assert vec._base.cap == 1024
    learn(vec, vec.vocab.ids[:3])  # and learning goes on with the smaller buffers
    assert 0 < vec._base.n <= 3 * vec._base_room


def test_a_large_catalogues_base_starts_with_its_room_and_keeps_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A base over a catalogue of ``BASE_START`` rows or more starts with that many slots and
    input places, so the first clicks copy no buffers (each doubling from 1,024 copied the
    whole base); a share that used few of them leaves them."""
    monkeypatch.setattr(item2vec, "BASE_START", 8192)
    vec = ItemVectors(CFG)
    for i in range(20_000):
        vec.upsert(f"i{i}")
    base = vec._base
    assert base.cap == base.in_cap == 8192
    buffers = (base.w_out, base.w_in, base.rows)
    for s in sessions(14, 400, items=20_000):
        learn(vec, s)
    assert 1024 < base.n < 8192
    assert all(now is then for now, then in zip((base.w_out, base.w_in, base.rows), buffers,
                                                strict=True))  # the same arrays: never resized
    vec.share()
    learn(vec, vec.vocab.ids[:3])
    vec.share()
    assert base.cap == base.in_cap == 8192


def test_a_growing_base_copies_only_the_slots_in_use() -> None:
    """A base grows with the tables to ``BASE_START`` slots. Copying its old buffers whole
    wrote their unused zeros into the new ones, resident for nothing (17 MiB in each vector
    buffer here); copying the slots in use (none yet) leaves the new buffers unmapped."""
    base = item2vec.SharedBase(64, 1024, enabled=True)
    base.grow_rows(70_000)
    assert base.cap == base.in_cap == 70_000 and base.n == 0
    before = rss_mb()
    base.grow_rows(2 * item2vec.BASE_START)
    grew = rss_mb() - before
    assert base.cap == base.in_cap == item2vec.BASE_START
    assert grew < 8, f"{grew:.1f} MiB resident after the resize"


def test_only_rows_whose_input_vector_moved_keep_a_copy_of_it() -> None:
    """Negatives change only output vectors: their slots hold no copy of the input side,
    and the rows a click's pairs learn from hold theirs as it was before the click."""
    vec = ItemVectors(CFG)
    for s in sessions(8, 300, items=2000):
        learn(vec, s)
    vec.share()
    before_in = vec.w_in[: len(vec)].copy()
    learn(vec, vec.vocab.ids[:4])
    base = vec._base
    rows, places = base.rows[: base.n], base.in_at[: base.n]
    has = places >= 0
    moved_in = np.flatnonzero((vec.w_in[: len(vec)] != before_in).any(axis=1))
    assert set(rows[has].tolist()) == set(moved_in.tolist())
    assert 0 < has.sum() < len(rows) / 2 and base.top[1] == has.sum()
    np.testing.assert_array_equal(base.w_in[places[has]], before_in[rows[has]])


def test_a_share_is_due_once_enough_rows_wait_and_until_its_pass_ends() -> None:
    model = Recommender(RecommenderConfig(item2vec=CFG))
    for s in sessions(14, 200, items=400):
        learn(model, s)
    waiting = model.vectors.unshared
    assert waiting > 50
    assert model.share_due(waiting) and not model.share_due(waiting + 1) and not model.share_due(0)
    model.share(limit=10)  # a pass in parts begun: due until it ends, whatever the bound
    assert model.sharing and model.share_due(0)
    while model.sharing:
        model.share(limit=10)
    assert model.vectors.unshared == 0 and not model.share_due(1)


def test_a_snapshot_with_full_shared_tables_still_restores() -> None:
    """Snapshots written before the base was kept per row carry whole shared tables."""
    a = ItemVectors(CFG)
    for s in sessions(9, 40):
        learn(a, s)
    a.share()
    for s in sessions(10, 5):
        learn(a, s)
    state = a.state()
    n = len(a)
    rows = state.pop("shared_rows")
    full: dict[str, np.ndarray] = {"shared_in": a.w_in[:n].copy(), "shared_out": a.w_out[:n].copy(),
            "shared_counts": a.vocab.counts[:n].copy()}
    full["shared_in"][rows] = state.pop("shared_rows_in")
    full["shared_out"][rows] = state.pop("shared_rows_out")
    full["shared_counts"][rows] = state.pop("shared_rows_counts")
    old, new = ItemVectors(CFG), ItemVectors(CFG)
    old.restore({**state, **full})
    new.restore(a.state())
    np.testing.assert_array_equal(old.w_out[:n], new.w_out[:n])
    np.testing.assert_array_equal(old.vocab.counts[:n], new.vocab.counts[:n])
    assert len(old.share()) == len(new.share()) == 0


def test_a_row_held_back_by_the_drift_floor_goes_out_after_max_wait_shares() -> None:
    """Tiny moves wait, but not for ever: the base kept for them stays bounded."""
    a, b = ItemVectors(CFG), ItemVectors(Item2VecConfig(**{**CFG.__dict__, "seed": 1}))
    for s in sessions(12, 200):
        learn(a, s)
    b.merge(a.share())
    row = a.row(a.vocab.ids[0])
    assert row is not None
    a.will_write(np.array([row]))
    a.w_out[row] *= np.float32(1.001)  # far under the 5% floor
    item = a.vocab.ids[0]
    for _ in range(4):
        assert item not in a.share(min_drift=0.05, max_wait=4).ids
    assert a._base.n == 1 and a._base.held[0] == 4
    sent = a.share(min_drift=0.05, max_wait=4)
    assert item in sent.ids and a._base.n == 0  # held back 4 times: it goes
    b.merge(sent)
    same_model(a, b)
    # Without a limit it would still be waiting.
    a.will_write(np.array([row]))
    a.w_out[row] *= np.float32(1.001)
    for _ in range(6):
        assert item not in a.share(min_drift=0.05).ids
