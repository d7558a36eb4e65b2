"""Shared fixtures: a real local broker (tansu) and worker processes, started by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A broker on a free loopback port; each test module gets its own, so topics start empty."""
    workdir: Path = tmp_path_factory.mktemp("stack")
    s = LocalStack(workdir, env={"SESSIONREC_SWEEP_INTERVAL_S": "1", "SESSIONREC_LOG_LEVEL": "info"})
    s.start()
    try:
        yield s
    finally:
        s.stop()
