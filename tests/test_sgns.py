"""The SGD step is the gradient of the loss it reports, and it learns a planted pattern."""

from __future__ import annotations

import numpy as np
from sgns_check import numeric_grad, tables

from models.item2vec import Item2VecConfig, ItemVectors
from models.sgns import scatter_add, sgns_gradients, sgns_loss, sgns_step


def test_step_follows_the_numerical_gradient_of_the_loss() -> None:
    w_in, w_out = tables()
    # Repeated rows on purpose: a row used twice must get both contributions.
    inputs = np.array([1, 2, 1])
    targets = np.array([3, 3, 4])
    negatives = np.array([[5, 6], [7, 3], [5, 5]])
    num_in = numeric_grad(w_in, w_out, inputs, targets, negatives, "in")
    num_out = numeric_grad(w_in, w_out, inputs, targets, negatives, "out")
    gi, go = sgns_gradients(w_in, w_out, inputs, targets, negatives)
    np.testing.assert_allclose(gi, num_in, atol=2e-3)
    np.testing.assert_allclose(go, num_out, atol=2e-3)

    lr = 1e-3
    a_in, a_out = w_in.copy(), w_out.copy()
    loss = sgns_step(a_in, a_out, inputs, targets, negatives, lr)
    assert abs(loss - sgns_loss(w_in, w_out, inputs, targets, negatives)) < 1e-3
    np.testing.assert_allclose((w_in - a_in) / lr, num_in, atol=5e-3)
    np.testing.assert_allclose((w_out - a_out) / lr, num_out, atol=5e-3)
    # Untouched rows stay put.
    assert np.array_equal(a_in[0], w_in[0]) and np.array_equal(a_out[0], w_out[0])


def test_per_pair_rates_scale_each_pairs_update() -> None:
    w_in, w_out = tables(1)
    inputs, targets, negatives = np.array([1, 2]), np.array([3, 4]), np.array([[5], [6]])
    a_in, a_out = w_in.copy(), w_out.copy()
    sgns_step(a_in, a_out, inputs, targets, negatives, np.array([0.0, 0.01], dtype=np.float32))
    assert np.array_equal(a_in[1], w_in[1]) and np.array_equal(a_out[3], w_out[3])
    assert not np.array_equal(a_in[2], w_in[2]) and not np.array_equal(a_out[4], w_out[4])


def test_scatter_add_accumulates_repeated_rows() -> None:
    rng = np.random.default_rng(2)
    table = rng.normal(size=(6, 3)).astype(np.float32)
    rows = np.array([0, 4, 4, 2, 4])
    vals = rng.normal(size=(5, 3)).astype(np.float32)
    want = table.copy()
    np.add.at(want, rows, vals)
    scatter_add(table, rows, vals)
    np.testing.assert_allclose(table, want, rtol=1e-6)


def test_planted_successor_ranks_first() -> None:
    """Item A is always followed by B among random noise: B must be A's best next item."""
    rng = np.random.default_rng(3)
    vec = ItemVectors(Item2VecConfig(dim=16, window=3, negatives=5, learning_rate=0.05,
                                     min_learning_rate=0.05, seed=3))
    noise = [f"n{i}" for i in range(40)]
    for _ in range(600):
        session = [noise[j] for j in rng.integers(0, len(noise), 3)]
        if rng.random() < 0.5:
            at = int(rng.integers(0, 3))
            session[at:at] = ["A", "B"]
        for pos, item in enumerate(session):
            vec.learn(item, session[:pos])
    a, b = vec.row("A"), vec.row("B")
    assert a is not None and b is not None
    scores = vec.w_out[: len(vec)] @ vec.w_in[a]
    scores[a] = -np.inf  # A -> A is not a pair the learner sees
    assert int(np.argmax(scores)) == b
