"""``sessionrec bench transactions``: does the broker honour Kafka transactions?

Exactly-once processing (Faust's ``processing_guarantee="exactly_once"``) needs a broker
that hides aborted transactions from ``read_committed`` consumers. This starts the local
broker, writes committed and aborted transactions with a transactional kafka-python
producer, and reads them back at both isolation levels, so the answer is measured, not
assumed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from streams.local import LocalStack


def bench_transactions() -> list[dict[str, Any]]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    out: dict[str, Any] = {"bench": "transactions"}
    with LocalStack(Path(tempfile.mkdtemp(prefix="sessionrec-txn-"))) as stack:
        admin = KafkaAdminClient(bootstrap_servers=stack.address)
        admin.create_topics([NewTopic("txn-check", 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=stack.address, transactional_id="sessionrec-txn-check",
                                 enable_idempotence=True)
        try:
            producer.init_transactions()
            out["init_transactions"] = "ok"
            for value, commit in ((b"committed-1", True), (b"aborted", False), (b"committed-2", True)):
                producer.begin_transaction()
                producer.send("txn-check", value)
                producer.flush()
                if commit:
                    producer.commit_transaction()
                else:
                    producer.abort_transaction()
            out["commit_and_abort"] = "ok"
        except Exception as exc:  # noqa: BLE001 - the report is the point
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            producer.close()
        for level in ("read_uncommitted", "read_committed"):
            consumer = KafkaConsumer(bootstrap_servers=stack.address, isolation_level=level,
                                     enable_auto_commit=False, consumer_timeout_ms=3000)
            tp = TopicPartition("txn-check", 0)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            out[level] = [r.value.decode() for r in consumer]
            consumer.close()
    out["read_committed_hides_aborted"] = "aborted" not in out.get("read_committed", ["aborted"])
    return [out]
