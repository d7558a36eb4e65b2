"""The model's snapshot in the worker's state directory, so a restarted worker (a crash, a
rollout, a rescheduled pod with its volume) goes on from the model it had instead of
learning from nothing. Live sessions do not need it: they come back from the changelog.

Written atomically (a temporary file, then a rename), as plain arrays (``np.savez``, no
pickle); a snapshot that cannot be read or does not fit the settings is logged and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.recommender import Recommender, RecommenderConfig

log = logging.getLogger("sessionrec")
FILENAME = "model-v2.npz"
"""v2 keeps the shared base per changed row (``shared_rows*``). A version before it would
take such a snapshot for a model that never shared and send all of it to the other workers
as news (doubling every vector), so v2 goes under a name older versions do not read: after
a rollback they start from their own last snapshot and replay the deltas after it."""
OLDER = ("model.npz",)
"""Names earlier versions wrote, read when there is no current one (an upgrade)."""


def save(state: dict[str, npt.NDArray[Any]], directory: Path) -> Path:
    """Write ``state`` (from ``Recommender.state()``) to ``directory/FILENAME`` atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    tmp = directory / (FILENAME + ".tmp")
    with open(tmp, "wb") as fh:
        arrays: dict[str, Any] = dict(state)
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def save_in_child(make_state: Callable[[], dict[str, npt.NDArray[Any]]], directory: Path) -> int:
    """Fork, and in the child write ``make_state()`` as ``save`` does, then exit; returns the
    child's pid (``wait_child`` reaps it). The child's memory is the parent's at the fork,
    page by page copy-on-write, so the snapshot is the model at that instant while the parent
    goes on serving (the way Redis's BGSAVE writes its dump): copied on the worker's event
    loop, a snapshot held the clicks 0.64 s at 1M items once a minute, the fork 9 ms. The
    caller must have no write of its own in flight on another thread: the child has only
    the thread that forked."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: no logging (a lock another thread held at the fork), no cleanup
        _become_writer()
        save(make_state(), directory)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported through the exit status
        os.write(2, f"sessionrec: snapshot failed in the child: {exc!r}\n".encode())
    finally:
        os._exit(code)


def _become_writer() -> None:
    """In the child: signals as by default, not routed to the worker's event loop (the
    parent's wakeup pipe: a SIGTERM for the child ran the parent's shutdown), and the first
    to go when memory runs out (a lost snapshot keeps the previous one; a lost worker, its
    partitions)."""
    with contextlib.suppress(ValueError):  # not forked from the main thread: not ours to reset
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")


def wait_child(pid: int, timeout_s: float = 300.0) -> bool:
    """Block until the ``save_in_child`` child ``pid`` exits; whether it wrote the snapshot.
    A child still running after ``timeout_s`` is killed (False): a snapshot must not hold
    the next one, or the one at a clean stop, for ever (at 1M items a child takes 2-5 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False
        time.sleep(0.02)


def read(directory: Path) -> dict[str, npt.NDArray[Any]] | None:
    """The arrays of ``directory``'s snapshot (the current name first, then the ``OLDER``
    ones); None when there is none or it is unreadable."""
    found = [directory / name for name in (FILENAME, *OLDER) if (directory / name).exists()]
    if not found:
        return None
    path = found[0]
    try:
        with np.load(path, allow_pickle=False) as f:
            return dict(f)
    except (OSError, ValueError) as exc:
        log.warning("ignoring model snapshot %s: %s", path, exc)
        return None


def restore(saved: dict[str, npt.NDArray[Any]] | None, config: RecommenderConfig) -> Recommender | None:
    """The model in a snapshot read by ``read``, its index rebuilt; None when it cannot be used."""
    if saved is None:
        return None
    t0 = time.perf_counter()
    try:
        model = Recommender.restore(saved, config)
    except (ValueError, KeyError) as exc:
        log.warning("ignoring model snapshot: %s", exc)
        return None
    log.info("restored %d items from the snapshot in %.1f s", len(model.vectors), time.perf_counter() - t0)
    return model


def load(directory: Path, config: RecommenderConfig) -> Recommender | None:
    """The model in ``directory``'s snapshot, its index rebuilt; None when there is none
    or it cannot be used."""
    return restore(read(directory), config)
