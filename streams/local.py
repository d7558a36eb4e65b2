"""Run the whole thing on one machine: broker and workers as child processes.

Used by ``sessionrec demo``, the benchmarks and the integration tests, so all three start
the product the same way. Readiness is polled from the worker's own ``/readyz``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streams.broker import ensure_topics, start_broker, stop_process
from streams.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_until(check: Callable[[], object], timeout: float, what: str, detail: str = "") -> None:
    """Poll ``check`` until it is true; AssertionError naming ``what`` (and ``detail``, e.g.
    a worker's log tail) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    web_port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def ready(self) -> bool:
        try:
            return http_get(self.url + "/readyz")[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see "
                                   f"{self.log_path}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        return http_get(self.url + "/metrics")[1].decode()

    def metric(self, sample: str) -> float:
        """The value of one sample on ``/metrics`` (``name`` or ``name{label="v"}``); a bare
        name sums every labelled sample of it. 0 when absent."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(sample + " ") or ("{" not in sample and line.startswith(sample + "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalStack:
    """A broker on a free (or given) loopback port plus any number of workers."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    broker_port: int | None = None
    broker: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def settings(self, **overrides: object) -> Settings:
        return Settings.from_env({**self.base_env(), **self.env}, **overrides)

    def base_env(self) -> dict[str, str]:
        return {"SESSIONREC_BROKER": f"kafka://{self.address}"}

    def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.broker_port is None:
            self.broker_port = free_port()
        self.broker = start_broker(self.address, self.workdir / "broker.log")
        ensure_topics(self.settings())
        return self

    def start_worker(self, name: str = "w0", web_port: int | None = None,
                     extra_env: dict[str, str] | None = None, app: str | None = None) -> Worker:
        """Start ``sessionrec worker`` (or the Faust app module ``app``) as a child process."""
        port = web_port or free_port()
        data = self.workdir / name
        data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.base_env(), **self.env, **(extra_env or {}),
               "SESSIONREC_WEB_PORT": str(port), "SESSIONREC_DATA_DIR": str(data)}
        log_path = self.workdir / f"{name}.log"
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        argv = ([sys.executable, "-m", "faust", "-A", app, "worker", "-l", "warn"] if app
                else [sys.executable, "-m", "streams.cli", "worker"])
        proc = subprocess.Popen(argv, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        w = Worker(proc, port, data, log_path)
        self.workers.append(w)
        return w

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The broker stopped (SIGSTOP) for the ``with`` block, then resumed: an outage that
        keeps the in-memory broker's data, which killing it would lose."""
        assert self.broker is not None
        os.kill(self.broker.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.broker.pid, signal.SIGCONT)

    def stop_worker(self, w: Worker) -> None:
        stop_process(w.proc, timeout=30)

    def stop(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                stop_process(w.proc, timeout=30)
        if self.broker is not None:
            stop_process(self.broker)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
