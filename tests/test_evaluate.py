"""`sessionrec evaluate`: the field's next-item protocol, checked from its own dump."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from models.baselines import SequentialRules
from models.engine import Engine
from models.evaluate import Scores, evaluate, read_sessions_tsv
from streams.cli import main
from streams.synthetic import synthetic_stream


def write_tsv(path: Path, rows: list[tuple[str, str, float]], shuffle_seed: int = 0) -> None:
    """session-rec's format; rows grouped by session but not in time order, like the real files."""
    by_session: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for r in rows:
        by_session[r[0]].append(r)
    keys = list(by_session)
    random.Random(shuffle_seed).shuffle(keys)
    with open(path, "w") as fh:
        fh.write("SessionId\tItemId\tTime\n")
        for k in keys:
            for sid, item, ts in by_session[k]:
                fh.write(f"{sid}\t{item}\t{ts}\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("eval")
    rows: list[tuple[str, str, float]] = []
    # One SessionId per synthetic session: split a visitor's clicks where it pauses > 30 min.
    last: dict[str, tuple[int, float]] = {}
    n_sessions = 0
    for c in synthetic_stream(6000, items=300, seed=3):
        sid, ts = last.get(c.visitor_id, (-1, -1e18))
        if c.ts - ts > 1800:
            sid = n_sessions
            n_sessions += 1
        last[c.visitor_id] = (sid, c.ts)
        rows.append((str(sid), c.item_id, c.ts))
    cut = rows[int(len(rows) * 0.8)][2]
    train_ids = {r[0] for r in rows if r[2] < cut}
    train = [r for r in rows if r[0] in train_ids]
    test = [r for r in rows if r[0] not in train_ids]
    write_tsv(d / "train.tsv", train, 1)
    write_tsv(d / "test.tsv", test, 2)
    return d / "train.tsv", d / "test.tsv"


def test_reader_sorts_by_time(files: tuple[Path, Path]) -> None:
    rows = read_sessions_tsv(files[1])
    assert [r.ts for r in rows] == sorted(r.ts for r in rows)


def test_figures_match_a_recount_from_the_dump(files: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    train, test = files
    out_json, dump = tmp_path / "r.json", tmp_path / "recs.csv"
    assert main(["evaluate", "--train", str(train), "--test", str(test), "--json", str(out_json),
                 "--dump", str(dump), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out_json.read_text())
    # Recount with the standard library: every consecutive pair of every test session.
    sessions: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    lines = test.read_text().splitlines()[1:]
    for n, line in enumerate(lines):
        sid, item, ts = line.split("\t")
        sessions[sid].append((float(ts), n, item))
    for v in sessions.values():
        v.sort()
    pairs = sum(len(v) - 1 for v in sessions.values())
    assert figures["model"]["events"] == pairs
    assert f"events={pairs}" in printed
    hits20 = hits10 = 0
    rr20 = 0.0
    rows = dump.read_text().splitlines()
    assert rows[0] == "SessionId;Position;Recommendations;Scores"
    assert len(rows) - 1 == pairs
    for row in rows[1:]:
        sid, pos, recs, scores = row.split(";")
        items = recs.split(",")
        assert len(items) == len(scores.split(",")) <= 20
        target = sessions[sid][int(pos) + 1][2]
        if target in items:
            rank = items.index(target) + 1
            hits20 += 1
            hits10 += rank <= 10
            rr20 += 1 / rank
    assert figures["model"]["hr@20"] == pytest.approx(hits20 / pairs, abs=1e-6)
    assert figures["model"]["hr@10"] == pytest.approx(hits10 / pairs, abs=1e-6)
    assert figures["model"]["mrr@20"] == pytest.approx(rr20 / pairs, abs=1e-6)
    assert set(figures["baselines"]) == {"pop", "markov", "sr"}


def test_same_input_and_seed_give_identical_output(files: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = files
    outs = []
    for run in range(2):
        j, d = tmp_path / f"r{run}.json", tmp_path / f"d{run}.csv"
        main(["evaluate", "--train", str(train), "--test", str(test), "--json", str(j),
              "--dump", str(d), "--seed", "5", "--no-progress"])
        outs.append((j.read_bytes(), d.read_bytes()))
    assert outs[0] == outs[1]


def test_frozen_does_not_learn_during_test(files: tuple[Path, Path]) -> None:
    train = read_sessions_tsv(files[0])
    test = read_sessions_tsv(files[1])
    engine = Engine()
    evaluate(train, test, engine, frozen=True, baselines=[])
    frozen_updates = engine.model.vectors.updates
    engine2 = Engine()
    evaluate(train, [], engine2, baselines=[])
    assert frozen_updates == engine2.model.vectors.updates
    engine3 = Engine()
    evaluate(train, test, engine3, baselines=[])
    assert engine3.model.vectors.updates > frozen_updates


def test_scores_on_a_hand_made_case() -> None:
    s = Scores((1, 3))
    assert s.add(["a", "b", "c"], "a") == 1
    assert s.add(["a", "b", "c"], "c") == 3
    assert s.add(["a", "b", "c"], "z") is None
    d = s.as_dict()
    assert d["events"] == 3
    assert d["hr@1"] == pytest.approx(1 / 3, abs=1e-6)
    assert d["hr@3"] == pytest.approx(2 / 3, abs=1e-6)
    assert d["mrr@3"] == pytest.approx((1 + 1 / 3) / 3, abs=1e-6)


def test_markov_baseline_learns_what_follows() -> None:
    m = SequentialRules(1, "markov")
    for _ in range(3):
        m.learn("b", ["a"])
    m.learn("c", ["a"])
    assert [i for i, _ in m.recommend(["x", "a"], 2)] == ["b", "c"]


def test_rolling_hit_rate_and_plot(tmp_path: Path) -> None:
    from streams.plots import plot_hit_trace, rolling

    r = rolling([True, False, True, True], 2)
    assert r.tolist() == [1.0, 0.5, 0.5, 1.0]
    out = tmp_path / "hr.png"
    plot_hit_trace({"model": [True, False] * 50, "pop": [False] * 100}, str(out), window=10)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gensim_baseline_is_reported(files: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    train, test = files
    j = tmp_path / "g.json"
    assert main(["evaluate", "--train", str(train), "--test", str(test), "--json", str(j),
                 "--gensim-epochs", "3", "--frozen", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(j.read_text())
    assert set(figures["baselines"]) == {"pop", "markov", "sr", "gensim"}
    assert figures["gensim_epochs"] == 3
    assert "gensim_epochs=3" in printed and "\ngensim " in printed
    # 300 items: a random list of 20 hits about 7% of the time.
    assert figures["baselines"]["gensim"]["hr@20"] > 0.3


def test_gensim_baseline_recommends_what_co_occurs() -> None:
    from models.baselines import GensimItem2Vec, sessions_of

    rng = random.Random(0)
    rows = []
    for s in range(400):
        group = s % 2
        for _ in range(6):
            rows.append((str(s), f"g{group}i{rng.randrange(5)}"))
    g = GensimItem2Vec(sessions_of(rows), epochs=20, dim=8, window=3, seed=1)
    again = GensimItem2Vec(sessions_of(rows), epochs=20, dim=8, window=3, seed=1)
    np.testing.assert_array_equal(g.wv.vectors, again.wv.vectors)  # workers=1 and a seed
    for session, group_name in ((["g0i0"], "g0"), (["g0i3", "g1i2"], "g1")):
        top = [i for i, _ in g.recommend(session, 5)]
        assert sorted(top) == [f"{group_name}i{j}" for j in range(5)], (session, top)
    assert [i for i, _ in g.recommend(["unknown"], 3)] == []  # nothing learned for the fallback
    g.learn("g1i4", [])
    assert [i for i, _ in g.recommend(["unknown"], 3)] == ["g1i4"]
