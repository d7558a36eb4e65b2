"""Online quality bookkeeping: rolling HR@k / MRR@k against hand counts, and ADWIN drift."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.quality import OnlineQuality


def test_scripted_sessions_match_a_hand_count() -> None:
    q = OnlineQuality(ks=(1, 3), window=100)
    # Visitor a, session s1: shown [x, y, z], then clicks y (rank 2): hit@3, miss@1.
    q.served("a", "s1", ["x", "y", "z"])
    assert q.clicked("a", "s1", "y") == 2
    assert q.last_judged
    # Shown [p, q, r], then clicks p (rank 1): hit@1 and @3.
    q.served("a", "s1", ["p", "q", "r"])
    assert q.clicked("a", "s1", "p") == 1
    # Visitor b: shown [m, n, o], then clicks w: a miss, still judged.
    q.served("b", "s2", ["m", "n", "o"])
    assert q.clicked("b", "s2", "w") is None
    assert q.last_judged
    # Visitor a's first click of a new session: nothing shown in it, not judged.
    q.served("a", "s1", ["x"])
    assert q.clicked("a", "s3", "x") is None
    assert not q.last_judged
    # Visitor c never saw a list: not judged.
    assert q.clicked("c", "s4", "x") is None
    assert not q.last_judged

    assert q.judged == 3
    assert q.window_size == 3
    assert q.hit_rate(1) == pytest.approx(1 / 3)
    assert q.hit_rate(3) == pytest.approx(2 / 3)
    assert q.mrr(1) == pytest.approx(1 / 3)
    assert q.mrr(3) == pytest.approx((1 / 2 + 1) / 3)


def test_a_list_is_judged_once() -> None:
    q = OnlineQuality(ks=(5,), window=10)
    q.served("a", "s", ["x"])
    q.clicked("a", "s", "x")
    # The next click without a new list shown (e.g. the list was never served) is not judged.
    assert q.clicked("a", "s", "x") is None
    assert q.judged == 1


def test_forget_drops_the_pending_list() -> None:
    q = OnlineQuality(ks=(5,), window=10)
    q.served("a", "s", ["x"])
    q.forget("a")
    assert q.clicked("a", "s", "x") is None
    assert q.judged == 0


def test_window_rolls() -> None:
    q = OnlineQuality(ks=(1,), window=4)
    for i, hit in enumerate([False, False, True, True, True, True]):
        q.served("v", "s", ["good"])
        q.clicked("v", "s", "good" if hit else f"other{i}")
    assert q.judged == 6
    assert q.window_size == 4
    assert q.hit_rate(1) == 1.0  # the two misses rolled out


@given(st.integers(1, 6), st.lists(st.one_of(st.none(), st.integers(1, 5)), max_size=40))
def test_rolling_values_equal_a_recount_of_the_window(window: int, ranks: list[int | None]) -> None:
    """The sums kept as the window moves must equal counting the last ``window`` ranks."""
    q = OnlineQuality(ks=(1, 3), window=window)
    items = ["a", "b", "c", "d", "e"]
    for i, rank in enumerate(ranks):
        q.served("v", "s", items)
        q.clicked("v", "s", items[rank - 1] if rank is not None else f"miss{i}")
        last = ranks[max(0, i + 1 - window) : i + 1]
        for k in (1, 3):
            assert q.hit_rate(k) == pytest.approx(sum(r is not None and r <= k for r in last) / len(last))
            assert q.mrr(k) == pytest.approx(sum(1 / r for r in last if r is not None and r <= k) / len(last))


def test_empty_window_reads_zero() -> None:
    q = OnlineQuality()
    assert q.hit_rate(20) == 0.0
    assert q.mrr(20) == 0.0


def feed(q: OnlineQuality, rate: float, n: int, rng: random.Random) -> None:
    for _ in range(n):
        q.served("v", "s", ["good"])
        q.clicked("v", "s", "good" if rng.random() < rate else "bad")


def test_adwin_finds_a_drop_and_says_how_large(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(3)
    q = OnlineQuality(ks=(20,), window=500)
    with caplog.at_level(logging.WARNING, logger="streams.quality"):
        feed(q, 0.6, 2000, rng)
        steady = len(q.drifts)
        feed(q, 0.1, 2000, rng)
    assert steady == 0  # no false alarm on a stationary stream of this length
    assert len(q.drifts) >= 1
    d = q.drifts[steady]
    assert d.at_event > 2000
    assert d.before > d.after  # a drop
    # The old segment's rate is near the old regime's 0.6 (it is a mean over real outcomes).
    assert 0.45 < d.before < 0.75
    assert d.dropped > 0
    messages = [r.getMessage() for r in caplog.records if "shift" in r.getMessage()]
    assert messages and f"{d.before:.3f} -> {d.after:.3f}" in messages[0]
    assert f"after {d.at_event} judged lists" in messages[0]


def test_no_drift_on_a_stationary_stream() -> None:
    rng = random.Random(11)
    q = OnlineQuality(ks=(20,))
    feed(q, 0.3, 3000, rng)
    assert q.drifts == []


def test_importing_the_metrics_and_the_benchmarks_loads_no_scipy_stats() -> None:
    """``river.drift``'s package import loads scipy.stats (64 MiB of RSS): only a process
    that builds an ``OnlineQuality`` (the worker) should pay for it, not the core benchmark
    whose peak RSS is the memory goal. The second half checks that this test can see it."""
    code = ("import sys, streams.bench, streams.metrics\n"
            "print('scipy.stats' in sys.modules)\n"
            "from streams.quality import OnlineQuality\n"
            "OnlineQuality()\n"
            "print('scipy.stats' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.split()
    assert out == ["False", "True"]
