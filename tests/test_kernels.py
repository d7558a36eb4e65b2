"""The compiled per-click learner against the numpy reference step and the loss's derivative."""

from __future__ import annotations

import numpy as np
from sgns_check import numeric_grad, tables

from models import kernels
from models.item2vec import Item2VecConfig, ItemVectors, UnigramSampler
from models.sgns import sgns_gradients, sgns_loss, sgns_step


def test_pair_step_matches_the_numpy_step_and_the_gradient() -> None:
    w_in, w_out = tables(d=7)
    a, rows = 2, np.array([5, 1, 7, 9], dtype=np.int64)  # positive, then distinct negatives
    inputs, targets, negatives = np.array([a]), rows[:1], rows[1:].reshape(1, -1)
    lr = 0.01
    k_in, k_out = w_in.copy(), w_out.copy()
    scores = np.zeros(len(rows), dtype=np.float32)
    kernels.pair_step(k_in, k_out, a, rows, lr, np.zeros(w_in.shape[1], dtype=np.float32), scores)
    loss = kernels.pair_loss(scores, len(rows))
    r_in, r_out = w_in.copy(), w_out.copy()
    ref_loss = sgns_step(r_in, r_out, inputs, targets, negatives, lr)
    assert abs(loss - ref_loss) < 1e-4
    assert abs(loss - sgns_loss(w_in, w_out, inputs, targets, negatives)) < 1e-4
    np.testing.assert_allclose(k_in, r_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k_out, r_out, rtol=1e-5, atol=1e-6)
    gi, go = sgns_gradients(w_in, w_out, inputs, targets, negatives)
    np.testing.assert_allclose((w_in - k_in) / lr, gi, atol=1e-4)
    np.testing.assert_allclose((w_out - k_out) / lr, go, atol=1e-4)
    # Rows the pair does not touch stay put.
    assert np.array_equal(k_in[0], w_in[0]) and np.array_equal(k_out[0], w_out[0])


def test_pair_step_follows_the_numerical_gradient() -> None:
    w_in, w_out = tables(1, n=6, d=4)
    a, rows = 1, np.array([3, 0, 4], dtype=np.int64)
    inputs, targets, negatives = np.array([a]), rows[:1], rows[1:].reshape(1, -1)
    lr = 1e-3
    num = numeric_grad(w_in, w_out, inputs, targets, negatives, "in")
    k_in, k_out = w_in.copy(), w_out.copy()
    kernels.pair_step(k_in, k_out, a, rows, lr, np.zeros(4, dtype=np.float32), np.zeros(3, dtype=np.float32))
    np.testing.assert_allclose((w_in - k_in) / lr, num, atol=5e-3)


def test_a_repeated_negative_is_scored_once_at_the_pairs_start() -> None:
    """Every row is scored before any moves: a row that comes twice takes the same gradient
    twice, as in the numpy reference (which adds all of a step's gradients together)."""
    w_in, w_out = tables(2, n=5, d=3)
    rows = np.array([1, 3, 3], dtype=np.int64)
    k_in, k_out = w_in.copy(), w_out.copy()
    scores = np.zeros(3, dtype=np.float32)
    kernels.pair_step(k_in, k_out, 0, rows, 0.5, np.zeros(3, dtype=np.float32), scores)
    u = w_in[0]
    assert scores[1] == scores[2]
    assert abs(float(scores[2]) - float(u @ w_out[3])) < 1e-6
    sig = 1.0 / (1.0 + np.exp(-(u @ w_out[3])))
    np.testing.assert_allclose(k_out[3], w_out[3] - 2 * 0.5 * sig * u, rtol=1e-5)
    r_in, r_out = w_in.copy(), w_out.copy()
    sgns_step(r_in, r_out, np.array([0]), rows[:1], rows[1:].reshape(1, -1), 0.5)
    np.testing.assert_allclose(k_out, r_out, rtol=1e-5, atol=1e-6)


def test_draws_follow_the_cumulative_table() -> None:
    counts = np.array([1.0, 10.0, 100.0, 0.0, 1000.0])
    sampler = UnigramSampler(0.75)
    sampler.rebuild(counts, len(counts))
    state = kernels.seed_state(5)
    draws = np.array([kernels.draw_one(sampler._cum, sampler._guide, len(counts), state)
                      for _ in range(100_000)])
    seen = np.bincount(draws, minlength=len(counts))
    expected = counts**0.75 / (counts**0.75).sum() * len(draws)
    assert seen[3] == 0
    nz = expected > 0
    assert float((((seen - expected) ** 2)[nz] / expected[nz]).sum()) < 25.0
    # The guide table finds exactly the row a binary search finds, rounding edges included.
    cum = np.cumsum(np.random.default_rng(0).random(1000) ** 3)
    guide = kernels.guide_table(cum)
    a, b = kernels.seed_state(9), kernels.seed_state(9)
    got = [kernels.draw_one(cum, guide, len(cum), a) for _ in range(20_000)]
    want = np.minimum(np.searchsorted(cum, [kernels.next_uniform(b) * cum[-1] for _ in range(20_000)],
                                      side="right"), len(cum) - 1)
    assert got == want.tolist()
    u = np.array([kernels.next_uniform(state) for _ in range(10_000)])
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.02


def _train(seed: int) -> ItemVectors:
    rng = np.random.default_rng(7)
    vec = ItemVectors(Item2VecConfig(dim=8, window=3, replay_pairs=4, replay_buffer=50, seed=seed))
    for _ in range(200):
        session = [f"i{j}" for j in rng.integers(0, 30, 4)]
        for pos, item in enumerate(session):
            vec.learn(item, session[:pos])
    return vec


def test_learner_is_deterministic_for_its_seed_and_tracks_changed_rows() -> None:
    a, b, c = _train(1), _train(1), _train(2)
    assert np.array_equal(a.w_in, b.w_in) and np.array_equal(a.w_out, b.w_out)
    assert not np.array_equal(a.w_out, c.w_out)
    rows = a.take_dirty().tolist()
    assert rows == sorted(set(rows)) and rows
    # Every row whose output vector is non-zero was reported (they all start at zero).
    assert set(np.flatnonzero(np.abs(a.w_out[: len(a)]).sum(axis=1) > 0).tolist()) <= set(rows)
    assert a.take_dirty().size == 0
    a.learn("i1", ["i2"])
    assert a.row("i1") in a.take_dirty()


def test_tabulated_sigmoid_and_log_sigmoid_are_close_to_the_exact_ones() -> None:
    x = np.concatenate([np.linspace(-40.0, 40.0, 40_001), [0.0, 1e-9, -8.0, 8.0, -7.999, 7.999]])
    sig = np.array([kernels.sigmoid(float(v)) for v in x])
    log_sig = np.array([kernels.log_sigmoid(float(v)) for v in x])
    assert np.abs(sig - 1.0 / (1.0 + np.exp(-x))).max() < 3e-7
    exact_log = np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))
    assert np.abs(log_sig - exact_log).max() < 1e-6
