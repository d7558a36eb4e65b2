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

It also exits at once after a crash. Mode closes the event loop and re-raises the crash, and
Python then waits for every non-daemon thread before the process ends; aiokafka's consumer
thread, still retrying a broker that stopped answering, kept a crashed worker's process
alive (no event loop, no web server) for minutes (tests/test_delivery.py). A process that
ends is restarted by its orchestrator; one that lingers serves nothing.
"""

from __future__ import annotations

import logging
import os
import sys

import faust

EX_SOFTWARE = 70


class Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None  # no spinner handler: the root logger keeps ``level``
        super().on_setup_root_logger(logger, level)

    def _shutdown_loop(self) -> None:
        try:
            super()._shutdown_loop()
        except Exception:
            logging.getLogger("sessionrec").exception("the worker crashed; exiting")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EX_SOFTWARE)
