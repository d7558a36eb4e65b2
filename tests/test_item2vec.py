"""Online vocabulary growth, the streaming negative sampler, and the replay buffer."""

from __future__ import annotations

import numpy as np

from models.item2vec import Item2VecConfig, ItemVectors, ReplayBuffer, UnigramSampler


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
