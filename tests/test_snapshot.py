"""The worker's snapshot written by a forked child: the model at the fork, whatever the
parent does meanwhile; a child that cannot write says so."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np

from models.item2vec import Item2VecConfig
from models.recommender import Recommender, RecommenderConfig
from streams import snapshot

CFG = RecommenderConfig(item2vec=Item2VecConfig(dim=8, seed=3, shared=True))


def _learned(n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[f"i{j}" for j in rng.integers(0, 60, int(rng.integers(2, 6)))] for _ in range(n)]


def _learn(model: Recommender, sessions: list[list[str]]) -> None:
    for items in sessions:
        model.learn_many([(item, items[:pos]) for pos, item in enumerate(items)])


def test_a_snapshot_written_by_a_child_is_the_model_at_the_fork(tmp_path: Path) -> None:
    model = Recommender(CFG)
    _learn(model, _learned(200, 1))
    model.refresh()
    at_fork = model.state()
    pid = snapshot.save_in_child(lambda: model.state(copy=False), tmp_path)  # as the worker does
    # The parent goes on learning at once (new items too), while the child writes.
    _learn(model, _learned(200, 2) + [["new-a", "new-b"]])
    model.refresh()
    assert snapshot.wait_child(pid)
    saved = snapshot.read(tmp_path)
    assert saved is not None and set(saved) == set(at_fork)
    for name, array in at_fork.items():
        np.testing.assert_array_equal(saved[name], array, err_msg=name)
    assert not np.array_equal(model.state()["w_out"][: len(at_fork["w_out"])], at_fork["w_out"])
    restored = snapshot.restore(saved, CFG)
    assert restored is not None and restored.vectors.row("new-a") is None
    assert len(restored.vectors) == len(at_fork["counts"])


def test_a_child_that_cannot_write_says_so_and_leaves_the_old_snapshot(tmp_path: Path) -> None:
    model = Recommender(CFG)
    _learn(model, _learned(50, 3))
    snapshot.save(model.state(), tmp_path)
    before = (tmp_path / snapshot.FILENAME).read_bytes()

    def broken() -> dict[str, np.ndarray]:
        raise OSError("disk full")

    assert not snapshot.wait_child(snapshot.save_in_child(broken, tmp_path))
    assert (tmp_path / snapshot.FILENAME).read_bytes() == before
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert not snapshot.wait_child(snapshot.save_in_child(model.state, blocked))


def test_a_child_that_hangs_is_killed_at_the_timeout(tmp_path: Path) -> None:
    def hangs() -> dict[str, np.ndarray]:
        time.sleep(600)
        return {}

    t0 = time.monotonic()
    assert not snapshot.wait_child(snapshot.save_in_child(hangs, tmp_path), timeout_s=0.5)
    assert time.monotonic() - t0 < 30 and not (tmp_path / snapshot.FILENAME).exists()


def test_a_signal_for_the_child_stops_the_child_not_the_worker(tmp_path: Path) -> None:
    """The worker routes SIGTERM through its event loop's wakeup pipe, which a forked child
    shares: the child must not ignore a SIGTERM, nor hand it to the worker."""

    async def run() -> tuple[bool, list[str]]:
        got: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: got.append("worker stopping"))
        try:
            def slow() -> dict[str, np.ndarray]:
                time.sleep(2.0)
                return {"x": np.zeros(3)}

            pid = snapshot.save_in_child(slow, tmp_path)
            await asyncio.sleep(0.3)
            os.kill(pid, signal.SIGTERM)
            ok = await asyncio.to_thread(snapshot.wait_child, pid, 20.0)
            await asyncio.sleep(0.2)
            return ok, got
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    ok, got = asyncio.run(run())
    assert not ok and got == [] and not (tmp_path / snapshot.FILENAME).exists()


def test_state_without_copies_gives_views_of_the_model() -> None:
    model = Recommender(CFG)
    _learn(model, _learned(20, 4))
    model.refresh()
    views, copies = model.state(index=True, copy=False), model.state(index=True)
    assert set(views) == set(copies)
    held = {"w_in": model.vectors.w_in, "w_out": model.vectors.w_out,
            "counts": model.vectors.vocab.counts, "index_indexed": model.index._indexed}
    for name, array in held.items():
        assert np.shares_memory(views[name], array) and not np.shares_memory(copies[name], array)
        np.testing.assert_array_equal(views[name], copies[name])
