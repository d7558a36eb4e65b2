"""Online vocabulary growth, the streaming negative sampler, and the replay buffer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.item2vec import Item2VecConfig, ItemVectors, ReplayBuffer, UnigramSampler, Vocabulary


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(max_size=3)), max_size=300),
       st.sampled_from([2, 4, 1024]), st.sampled_from([0, 3, 65_536]))
def test_vocabulary_answers_as_a_dict_would(ops: list[tuple[bool, str]], slots: int, recent: int) -> None:
    """Adds and lookups in any order, against a dict: rows in first-seen order, unknown ids
    not found. With 2 or 4 slots to start, most ids collide and the table grows (is rebuilt)
    many times within one example."""
    vocab, ref = Vocabulary(slots=slots, recent=recent), dict[str, int]()
    for is_add, item in ops:
        if is_add:
            new = item not in ref
            assert vocab.add(item) == (ref.setdefault(item, len(ref)), new)
        assert vocab.get(item) == ref.get(item)
    assert vocab.ids == list(ref) and len(vocab) == len(ref)
    assert all(vocab.get(item) == row for item, row in ref.items())
    assert vocab.get("not added: longer than any added id") is None


def test_vocabulary_table_stays_at_most_half_full() -> None:
    vocab = Vocabulary(slots=4)
    for i in range(5000):
        vocab.add(f"item-{i}")
        size = vocab.slots()
        assert 2 * len(vocab) <= size and size & (size - 1) == 0
    assert vocab.slots() == 16384
    with pytest.raises(ValueError, match="power of two"):
        Vocabulary(slots=1000)


def test_vocabulary_grows_and_keeps_earlier_vectors() -> None:
    vec = ItemVectors(Item2VecConfig(dim=8, learning_rate=0.05, seed=1))
    start_cap = vec.w_in.shape[0]
    vec.learn("a", ())
    vec.learn("b", ("a",))
    snapshot_in = vec.w_in[:2].copy()
    snapshot_out = vec.w_out[:2].copy()
    # A stream of never-seen ids, each its own session, pushes the tables past capacity.
    for i in range(start_cap + 10):
        vec.learn(f"new{i}", ())
    assert len(vec) == start_cap + 12
    assert vec.w_in.shape[0] >= len(vec) and vec.w_out.shape[0] >= len(vec)
    np.testing.assert_array_equal(vec.w_in[:2], snapshot_in)
    np.testing.assert_array_equal(vec.w_out[:2], snapshot_out)
    assert vec.vocab.ids[vec.row("new5") or 0] == "new5"


def test_new_item_is_learnable_at_once() -> None:
    vec = ItemVectors(Item2VecConfig(dim=8, negatives=2, learning_rate=0.1, min_learning_rate=0.1, seed=2))
    for i in range(50):
        vec.learn(f"x{i}", ())
    before = vec.updates
    vec.learn("fresh", ("x1", "x2"))
    row = vec.row("fresh")
    assert row is not None and vec.updates == before + 2
    assert np.linalg.norm(vec.w_out[row]) > 0  # its output vector moved on its first click
    first = float(vec.w_in[vec.row("x2") or 0] @ vec.w_out[row])
    for _ in range(20):
        vec.learn("fresh", ("x1", "x2"))
    assert float(vec.w_in[vec.row("x2") or 0] @ vec.w_out[row]) > first


def test_sampler_follows_smoothed_counts() -> None:
    counts = np.array([1.0, 10.0, 100.0, 1000.0, 0.0, 50.0])
    sampler = UnigramSampler(power=0.75)
    sampler.rebuild(counts, len(counts))
    draws = sampler.draw(np.random.default_rng(0), (200_000,))
    seen = np.bincount(draws, minlength=len(counts))
    expected = counts**0.75 / (counts**0.75).sum() * len(draws)
    assert seen[4] == 0  # never clicked, never drawn
    nz = expected > 0
    chi2 = float((((seen - expected) ** 2)[nz] / expected[nz]).sum())
    assert chi2 < 25.0  # 4 degrees of freedom: p < 1e-4 for a correct sampler
    # And it is not the raw unigram: the rare item is drawn well above its raw share.
    assert seen[0] / len(draws) > 2 * counts[0] / counts.sum()


def test_sampler_tracks_the_stream() -> None:
    vec = ItemVectors(Item2VecConfig(dim=4, seed=3))
    for _ in range(300):
        vec.learn("old", ())
    for _ in range(3000):
        vec.learn("hot", ())
    draws = vec.sampler.draw(np.random.default_rng(1), (10_000,))
    share_hot = float((draws == vec.row("hot")).mean())
    want = 3000**0.75 / (3000**0.75 + 300**0.75)
    assert abs(share_hot - want) < 0.05


def test_replay_buffer_keeps_the_latest_pairs() -> None:
    buf = ReplayBuffer(4)
    for i in range(6):
        buf.push(np.array([i]), np.array([i + 100]), np.array([1.0], dtype=np.float32))
    assert buf.n == 4
    inputs, targets, _ = buf.sample(np.random.default_rng(0), 200)
    assert set(inputs.tolist()) == {2, 3, 4, 5}
    assert np.array_equal(targets, inputs + 100)


def test_replay_adds_steps_per_click() -> None:
    vec = ItemVectors(Item2VecConfig(dim=4, replay_pairs=3, seed=4))
    vec.learn("a", ())
    vec.learn("b", ("a",))
    assert vec.updates == 1  # nothing to replay yet
    vec.learn("c", ("b",))
    assert vec.updates == 1 + 1 + 3


def _clicks(n: int, items: int, seed: int) -> list[tuple[str, tuple[str, ...]]]:
    """``n`` clicks over ``items`` items, each with the (up to 3) items before it in a session
    of 5 clicks."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, tuple[str, ...]]] = []
    session: list[str] = []
    for i in range(n):
        if i % 5 == 0:
            session = []
        item = f"i{int(rng.zipf(1.5)) % items}"
        out.append((item, tuple(session[-3:])))
        session.append(item)
    return out


def test_learn_many_is_learn_in_turn() -> None:
    # Within a stretch with no rebuild of the negatives table (the first 256 clicks after
    # the first build), a batch learns exactly what the same clicks learned one by one do.
    clicks = _clicks(200, 60, seed=4)
    one, many = (ItemVectors(Item2VecConfig(dim=16, seed=5, shared=True)) for _ in range(2))
    losses_one = [one.learn(item, ctx) for item, ctx in clicks]
    losses_many = [many.learn(*clicks[0])]
    for lo in range(1, len(clicks), 64):
        losses_many.extend(many.learn_many(clicks[lo : lo + 64]).tolist())
    np.testing.assert_allclose(losses_many, losses_one, rtol=1e-6)
    n = len(one)
    np.testing.assert_array_equal(many.w_in[:n], one.w_in[:n])
    np.testing.assert_array_equal(many.w_out[:n], one.w_out[:n])
    assert (many.updates, many.version) == (one.updates, one.version)
    assert abs(many.loss_ema - one.loss_ema) < 1e-9 and one.loss_ema > 0
    np.testing.assert_array_equal(many.take_dirty(), one.take_dirty())
    a, b = one.share(), many.share()
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.d_out, b.d_out)


def test_negative_pool_bounds_the_rows_a_click_moves() -> None:
    # One click of 1 fresh + 20 replayed pairs, 5 negatives each: from a pool of 3 it moves
    # at most its 21 pairs' targets and the 3 pooled rows on the output side; drawn per pair
    # (pool 0), its 105 negatives move far more rows of a 500-item catalogue.
    moved = {}
    for pool in (3, 0):
        vec = ItemVectors(Item2VecConfig(dim=8, window=1, negatives=5, negative_pool=pool,
                                         replay_pairs=20, seed=6))
        for item, ctx in _clicks(2000, 500, seed=7):
            vec.learn(item, ctx)
        before = vec.w_out.copy()
        vec.learn("i1", ("i2",))
        moved[pool] = int(np.any(vec.w_out != before, axis=1).sum())
    assert moved[3] <= 21 + 3
    assert moved[0] > 40


def test_a_batch_that_fails_midway_leaves_its_new_items_learnable() -> None:
    """A malformed click fails the batch in its preparation, after the clicks before it added
    their items: those items still get rows and start vectors, so learning them alone next
    (what the worker does after a failed batch) works, also across a growth of the tables."""
    vec = ItemVectors(Item2VecConfig(dim=8, replay_pairs=4, replay_buffer=64))
    vec.learn_many([(f"old{i}", (f"old{i - 1}",) if i else ()) for i in range(1020)])
    batch: list[Any] = [(f"new{i}", (f"new{i - 1}",) if i else ()) for i in range(10)] + [("x", None)]
    with pytest.raises(TypeError):
        vec.learn_many(batch)
    assert len(vec) == 1020 + 11 and vec.w_in.shape[0] >= len(vec)
    for i in range(10):
        row = vec.row(f"new{i}")
        assert row is not None and np.abs(vec.w_in[row]).sum() > 0  # a start vector, not zeros
    for item, context in batch[:-1]:
        vec.learn_many([(item, context)])
    assert np.isfinite(vec.w_in[: len(vec)]).all() and np.isfinite(vec.w_out[: len(vec)]).all()


def test_a_negative_replay_setting_means_no_replay() -> None:
    vec = ItemVectors(Item2VecConfig(dim=8, window=2, replay_pairs=-5, replay_buffer=64))
    vec.learn_many(_clicks(200, 30, 0))
    assert vec.updates > 0 and vec.replay.n == 0
