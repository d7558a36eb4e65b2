"""``sessionrec demo``: broker + worker + synthetic clicks + the suggestions + the metrics."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from streams.broker import port_open, split_address
from streams.local import LocalStack
from streams.produce import make_producer, send_clicks, synthetic_clicks
from streams.settings import Settings
from streams.watch import format_recommendation, read_records

KEY_SERIES = (
    "sessionrec_clicks_total", "sessionrec_recommendations_total", "sessionrec_live_sessions",
    "sessionrec_sessions_closed_total", "sessionrec_vocabulary_items", "sessionrec_index_items",
    "sessionrec_online_hit_rate", "sessionrec_online_mrr", "sessionrec_training_loss",
    "sessionrec_recommendation_latency_seconds_count", "sessionrec_consumer_lag",
)


def run_demo(settings: Settings, seconds: float = 60.0, rate: float = 200.0,
             items: int = 2000) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sessionrec-demo-"))
    host, port = split_address(settings.broker_address)
    reuse = port_open(settings.broker_address)
    stack = LocalStack(workdir, broker_port=port)
    print(f"[demo] working directory {workdir}")
    try:
        if reuse:
            print(f"[demo] using the broker already on {settings.broker_address}")
            from streams.broker import ensure_topics

            ensure_topics(stack.settings())
        else:
            stack.start()
            print(f"[demo] broker (tansu) ready on {stack.address}")
        worker = stack.start_worker("worker", web_port=settings.web_port)
        print(f"[demo] worker starting; metrics on {worker.url}/metrics "
              "(joining the consumer group takes up to ~30 s)")
        worker.wait_ready(timeout=180)
        print("[demo] worker ready; sending synthetic clicks "
              f"at {rate:.0f}/s for {seconds:.0f}s")
        n = int(rate * seconds)
        producer = make_producer(stack.address)
        summary: list[str] = []
        sender = threading.Thread(target=lambda: summary.append(send_clicks(
            producer, settings.clicks_topic, synthetic_clicks(n, items, seed=1), rate=rate).line()),
            daemon=True)
        sender.start()
        shown = 0
        for rec in read_records(stack.address, settings.recommendations_topic,
                                until=lambda c: c >= n, timeout=seconds + 60, idle=15,
                                from_beginning=True):
            shown += 1
            if shown <= 20 or shown % max(1, int(rate)) == 0:
                print(format_recommendation(rec.value), flush=True)
        sender.join(timeout=5)
        producer.close()
        print(f"[demo] producer: {summary[0] if summary else 'still sending'}")
        print(f"[demo] suggestions received: {shown}")
        print("[demo] key metrics:")
        for line in worker.metrics().splitlines():
            if line.startswith(KEY_SERIES) and not line.startswith("#"):
                print("   ", line)
        return 0 if shown > 0 else 1
    finally:
        stack.stop()
        print("[demo] stopped")
