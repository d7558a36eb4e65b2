"""Faust's worker without its terminal spinner, so that the log level asked for is the
root logger's level.

At a level of WARN or above, Faust's worker keeps a progress spinner that moves on every
log record, and for that it sets the root logger to DEBUG (``faust.Worker
.on_setup_root_logger``; faust-streaming issue #495 is about what the spinner prints). Every
``log.debug`` call in faust, mode and aiokafka then builds a record the handler drops: in a
bare pass-through agent started with ``-l warn``, 7% of its event loop (py-spy, 800
clicks/s). A worker run with ``SESSIONREC_LOG_LEVEL=warn`` to quiet its logs would have
paid the same. ``streams.app`` and ``streams.passthrough`` both use this class
(Faust's ``Worker`` setting), so the bench's ceiling runs as the worker does.
"""

from __future__ import annotations

import logging

import faust


class Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None  # no spinner handler: the root logger keeps ``level``
        super().on_setup_root_logger(logger, level)
