"""The worker's Faust ``Worker`` leaves the root logger at the level asked for."""

from __future__ import annotations

import logging

import faust
import pytest

from streams.faust_worker import Worker


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR, logging.INFO])
def test_the_root_logger_keeps_the_level_asked_for(level: int) -> None:
    # Faust's own worker sets it to DEBUG at WARN and above (for its spinner), and every
    # debug call in faust, mode and aiokafka then builds a record.
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    app = faust.App("test-faust-worker", broker="kafka://127.0.0.1:1", store="memory://")
    try:
        root.setLevel(level)
        Worker(app, loglevel=level).on_setup_root_logger(root, level)
        assert root.level == level
        assert not logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
        assert root.handlers == saved_handlers  # no spinner handler added
    finally:
        root.setLevel(saved_level)
        root.handlers[:] = saved_handlers
