"""``sessionrec bench recovery``: how long a restarted worker takes to get its model back.

For each catalogue size: a model with that many items (the synthetic catalogue, preloaded
and indexed, then a stream of clicks learned), its snapshot written to a temporary state
directory the way the worker writes it, then read back the way a starting worker does
(``streams.snapshot``), timed: written from a forked child as the worker's timer does
(``snapshot_fork_s``: what the clicks wait; ``snapshot_child_s``: fork to written) and in
process (``snapshot_copy_s`` on the event loop, then ``snapshot_write_s``); read back with the
saved HNSW graphs loaded, and (up to
``rebuild_up_to`` items, as it grows linearly) with the index rebuilt from the vectors instead.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from models.recommender import Recommender
from streams import snapshot
from streams.bench import peak_rss_mb, preload
from streams.settings import Settings
from streams.synthetic import synthetic_stream


def bench_recovery(sizes: tuple[int, ...] = (100_000, 1_000_000), clicks: int = 20_000,
                   rebuild_up_to: int = 1_000_000) -> list[dict[str, Any]]:
    settings = Settings.from_env()
    config = settings.recommender_config()
    out: list[dict[str, Any]] = []
    for items in sizes:
        model = Recommender(config)
        t0 = time.perf_counter()
        preload(model, items, settings.seed)
        build_s = time.perf_counter() - t0
        for c in synthetic_stream(clicks, items=items, seed=settings.seed):
            model.learn(c.item_id, ())  # counts and vocabulary; vectors as preloaded
        model.refresh()
        if config.item2vec.shared:
            # As a worker has done within its last share interval: a restore goes on from what
            # was shared (ItemVectors.restore), so an unshared model would come back empty.
            model.share(settings.share_min_drift, settings.share_max_wait)
        directory = Path(tempfile.mkdtemp(prefix="sessionrec-recovery-"))
        try:
            # As the worker's timer writes it: forked, the clicks wait for the fork only, and
            # the child writes views of its frozen memory. Then once with copies, as before:
            # a child's peak RSS counts the pages it shares with the parent too, and the
            # largest child so far is what RUSAGE_CHILDREN keeps, so views go first.
            t0 = time.perf_counter()
            pid = snapshot.save_in_child(partial(model.state, copy=False), directory)
            fork_s = time.perf_counter() - t0
            if not snapshot.wait_child(pid):
                raise RuntimeError("the snapshot child failed")
            child_s = time.perf_counter() - t0
            child_views_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            if not snapshot.wait_child(snapshot.save_in_child(model.state, directory)):
                raise RuntimeError("the snapshot child failed")
            child_copies_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            t0 = time.perf_counter()
            state = model.state()
            copy_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            snapshot.save(state, directory)
            write_s = time.perf_counter() - t0
            size = (directory / snapshot.FILENAME).stat().st_size
            del state
            t0 = time.perf_counter()
            back = snapshot.load(directory, config)
            load_s = time.perf_counter() - t0
            assert back is not None and len(back.index) == len(model.index)
            line: dict[str, Any] = {
                "bench": "recovery", "items": len(model.vectors), "dim": config.item2vec.dim,
                "snapshot_mb": round(size / 2**20, 1), "snapshot_fork_s": round(fork_s, 4),
                "snapshot_child_s": round(child_s, 3), "snapshot_copy_s": round(copy_s, 3),
                "snapshot_child_peak_rss_mb": round(child_views_mb, 1),
                "snapshot_child_peak_rss_mb_copying": round(child_copies_mb, 1),
                "snapshot_write_s": round(write_s, 3), "recovery_s": round(load_s, 3),
                "reinserted_on_load": back.index.inserts, "index_build_s": round(build_s, 2),
            }
            del back
            if items <= rebuild_up_to:
                no_index = model.state(index=False)
                t0 = time.perf_counter()
                Recommender.restore(no_index, config)
                line["recovery_rebuilding_index_s"] = round(time.perf_counter() - t0, 3)
                line["speedup_vs_rebuild"] = round(line["recovery_rebuilding_index_s"] / max(load_s, 1e-9), 1)
            line["peak_rss_mb"] = round(peak_rss_mb(), 1)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        out.append(line)
    return out
