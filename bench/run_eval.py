"""Scratch: run the offline evaluation with settings from env and overrides (KEY=VALUE args)."""
from __future__ import annotations

import sys
import time

from models.engine import Engine
from models.evaluate import evaluate, read_sessions_tsv
from streams.settings import Settings

D = "../shared/data/yoochoose-100k/"


def main() -> None:
    args = sys.argv[1:]
    frozen = "--frozen" in args
    prof = "--prof" in args
    limit = None
    ov: dict[str, object] = {}
    for a in args:
        if a.startswith("--limit="):
            limit = int(a.split("=")[1])
        elif "=" in a:
            k, v = a.split("=", 1)
            from streams.settings import _convert
            ov[k] = _convert(k, v, type(getattr(Settings, k)))
    s = Settings.from_env(**ov)
    train = read_sessions_tsv(D + "train_tr.tsv")
    test = read_sessions_tsv(D + "train_valid.tsv")
    if limit:
        train = train[:limit]
    eng = Engine(s.session_config(), s.recommender_config(), k=20)
    if "--exact" in args:
        import numpy as np
        import types
        m = eng.model
        m._candidates = types.MethodType(lambda self, q: np.arange(len(self.vectors)), m)  # type: ignore
        m.refresh = types.MethodType(lambda self: 0, m)  # type: ignore
    t0 = time.perf_counter()
    if prof:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
    rep = evaluate(train, test, eng, frozen=frozen)
    if prof:
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
    dt = time.perf_counter() - t0
    m = rep.model.as_dict()
    b = {n: sc.as_dict() for n, sc in rep.baselines.items()}
    line = f"{'frozen' if frozen else 'preq'} {' '.join(a for a in args if '=' in a)} | HR10 {m['hr@10']:.4f} MRR10 {m['mrr@10']:.4f} HR20 {m['hr@20']:.4f} MRR20 {m['mrr@20']:.4f} | {dt:.1f}s inserts={eng.model.index.inserts}"
    print(line)
    if "--base" in args:
        for n, d in b.items():
            print(n, d)


if __name__ == "__main__":
    main()
