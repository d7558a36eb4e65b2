"""``sessionrec bench e2e``: clicks/s and click-to-suggestion latency through the real broker.

One broker, one run: the ceiling (a bare Faust pass-through agent) and the worker, at each
batch size asked for, read the same preloaded clicks; then the worker, with the model it
learned, and the pass-through are each driven live at half the worker's measured maximum
while a reader in its own process times each answer from its click's produce time (both
processes read the same system-wide monotonic clock).

Each live phase runs on a broker of its own, started empty for it (``live_on_own_broker``).
The local broker (tansu 0.6.0, in-memory storage) slows down as it collects record batches:
with 15,000 one-record batches in a 4-partition topic, a bare produce -> consume round trip
at 100 messages/s measured p50 / p99 596 / 3,319 ms, against 13 / 21 ms with 1,000 (README,
*Performance*). On the broker the drains had used, even on new topics, the pass-through's
own p50 read 68 ms. Within one live phase it still shows: at 1,000 clicks/s on an empty
broker the broker's CPU rose from 0.29 to 0.68 of a core in 10 s, and the pass-through's
p50 from 18 to 30 ms in 5 s. Apache Kafka locates a fetch offset through its index; it
does not show this.
"""

from __future__ import annotations

import math
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streams import snapshot
from streams.broker import ensure_topics
from streams.local import LocalStack, Worker
from streams.produce import make_producer, synthetic_clicks
from streams.watch import read_records


def _drain_rate(address: str, topic: str, n: int, timeout: float) -> tuple[float, int]:
    """Messages/s on ``topic`` between its first and last of ``n`` messages, by the times
    their producer stamped on them (its send time, in ms), and how many were read. Not by
    their arrival at this reader: a reader whose group took long to join (20-30 s on the
    local broker) read a drain it had missed as one burst (600 answers at 155k a second in
    one test run)."""
    first, last = math.inf, -math.inf
    count = 0
    for r in read_records(address, topic, until=lambda c: c >= n, timeout=timeout):
        first, last = min(first, r.timestamp), max(last, r.timestamp)
        count += 1
    return ((count - 1) / ((last - first) / 1000.0) if count > 1 and last > first else 0.0), count


def bench_e2e(seconds: float = 20.0, items: int = 5000, clicks: int | None = None,
              batches: tuple[int, ...] = (1, 64), partitions: int = 1) -> list[dict[str, Any]]:
    """The pass-through ceiling, then one worker per batch size (``SESSIONREC_BATCH_MAX``),
    each in its own consumer group over the same preloaded clicks: one line per batch size,
    with the live latency of that worker's model and of the pass-through at half its rate.

    Every topic has ``partitions`` partitions. One by default: a producer's request carries
    one record batch per partition it writes to, and the local broker's fetch walks each
    stored batch, so at the same click rate 4 partitions make it do 4x the work (at 1,000
    clicks/s for 10 s, the bare pass-through's p50 / p99 read 21.9 / 40.0 ms on one and
    32.6 / 77.8 ms on four). One worker owns every partition either way."""
    workdir = Path(tempfile.mkdtemp(prefix="sessionrec-bench-"))
    n = clicks or int(seconds * 3000)
    lines: list[dict[str, Any]] = []
    layout = {"SESSIONREC_PARTITIONS": str(partitions)}
    with LocalStack(workdir, env=layout) as stack:
        producer = make_producer(stack.address)
        t0 = time.monotonic()
        for c in synthetic_clicks(n, items, seed=2):
            producer.send("clicks", key=c.visitor_id.encode(), value=c.to_json())
        producer.flush()
        common: dict[str, Any] = {"bench": "e2e", "clicks": n,
                                  "producer_clicks_per_s": round(n / (time.monotonic() - t0), 1),
                                  "partitions": len(producer.partitions_for("clicks"))}
        passthrough = stack.start_worker("passthrough", app="streams.passthrough", extra_env={
            "SESSIONREC_RECOMMENDATIONS_TOPIC": "passthrough-out"})
        passthrough.wait_ready(180)
        ceiling, _ = _drain_rate(stack.address, "passthrough-out", n, timeout=seconds * 20 + 120)
        common["passthrough_clicks_per_s"] = round(ceiling, 1)
        stack.stop_worker(passthrough)
        for batch in batches:
            out = {**common, "batch": batch}
            topic = f"recommendations-b{batch}"
            worker = stack.start_worker(f"worker-b{batch}", extra_env={
                "SESSIONREC_BATCH_MAX": str(batch), "SESSIONREC_APP_ID": f"sessionrec-b{batch}",
                "SESSIONREC_RECOMMENDATIONS_TOPIC": topic})
            worker.wait_ready(180)
            rate, got = _drain_rate(stack.address, topic, n, timeout=seconds * 40 + 120)
            out["clicks_per_s"] = round(rate, 1)
            out["answered"] = got
            if ceiling:
                out["ratio_vs_passthrough"] = round(rate / ceiling, 3)
            stack.stop_worker(worker)  # a clean stop saves the model the live phase starts from
            target = max(50.0, rate / 2)
            out.update(live_on_own_broker(workdir / f"live-b{batch}", target, seconds, items,
                                          {**layout, "SESSIONREC_BATCH_MAX": str(batch)},
                                          model_from=worker.data_dir))
            floor = live_on_own_broker(workdir / f"pass-b{batch}", target, seconds, items, layout,
                                       app="streams.passthrough")
            out.update({f"passthrough_{k}": v for k, v in floor.items() if k.endswith("_ms")})
            lines.append(out)
        producer.close()
    return lines


def live_on_own_broker(workdir: Path, target: float, seconds: float, items: int, env: dict[str, str],
                       app: str | None = None, model_from: Path | None = None) -> dict[str, Any]:
    """``live_latency`` on a broker of its own, started for it: the drains before it leave
    the shared broker holding tens of thousands of record batches, and its in-memory store
    then slowed every fetch (the pass-through's own p50 / p99 read 68 / 345 ms at 1,175
    clicks/s there, new topics and all). Each live phase starts from the same empty broker,
    its topics laid out by ``env`` (``SESSIONREC_PARTITIONS``), as the worker's are."""
    with LocalStack(workdir, env=env) as stack:
        producer = make_producer(stack.address)
        try:
            return live_latency(stack, producer, "live", target, seconds, items, env, app=app,
                                model_from=model_from)
        finally:
            producer.close()


def live_latency(stack: LocalStack, producer: Any, name: str, target: float, seconds: float,
                 items: int, env: dict[str, str], app: str | None = None,
                 model_from: Path | None = None, warmup_s: float = 1.0) -> dict[str, Any]:
    """A worker (or the Faust ``app``) on fresh topics ``clicks-{name}`` and
    ``recommendations-{name}``, started from the snapshot in ``model_from`` if given; clicks
    produced at ``target``/s as a live stream (event time = now), each answer timed from
    its click's send to its arrival at a reader in another process.

    The first ``warmup_s`` of clicks are sent and answered, untimed, before the timed ones:
    the local broker makes a partition's first writes slow (on fresh topics, about 0.1 s
    twice in the worker's first 0.3 s, which put 2.7-5.7% of a 5 s run at 1,000 clicks/s over 50 ms), where
    Apache Kafka lays a partition out when the topic is created. A worker meets its
    partitions long after they were created; this is that state."""
    clicks, answers = f"clicks-{name}", f"recommendations-{name}"
    ensure_topics(stack.settings(clicks_topic=clicks, recommendations_topic=answers))
    if model_from is not None:
        if not (model_from / snapshot.FILENAME).exists():
            raise RuntimeError(f"no model snapshot in {model_from}")
        shutil.copytree(model_from, stack.workdir / name, dirs_exist_ok=True)
    worker = stack.start_worker(name, app=app, extra_env={
        **env, "SESSIONREC_APP_ID": f"sessionrec-{name}", "SESSIONREC_CLICKS_TOPIC": clicks,
        "SESSIONREC_RECOMMENDATIONS_TOPIC": answers})
    worker.wait_ready(180)
    m = int(target * seconds)
    warm = int(target * warmup_s)
    ctx = multiprocessing.get_context("spawn")
    arrivals = ctx.Queue()
    reader = ctx.Process(target=_read_arrivals, daemon=True,
                         args=(stack.address, answers, m, seconds + 90, arrivals, warm))
    reader.start()
    if arrivals.get(timeout=120) != "ready":
        raise RuntimeError("the latency reader did not start")
    stream = synthetic_clicks(warm + m, items, seed=3)
    _send_paced(producer, clicks, stream, warm, target, f"{name}-warm", {})
    if warm and arrivals.get(timeout=120) != "warm":
        raise RuntimeError("the warm-up clicks were not answered")
    sent_at: dict[str, float] = {}
    _send_paced(producer, clicks, stream, m, target, name, sent_at)
    got: list[tuple[str, float]] = arrivals.get(timeout=seconds + 120)
    reader.join(timeout=30)
    stack.stop_worker(worker)
    lat = np.asarray([at - sent_at[eid] for eid, at in got if eid in sent_at]) * 1e3
    out: dict[str, Any] = {"latency_rate_clicks_per_s": round(target, 1), "latency_samples": int(lat.size),
                           "latency_warmup_clicks": warm,
                           "latency_partitions": len(producer.partitions_for(clicks))}
    if lat.size:
        for key, q in (("p50_ms", 50), ("p99_ms", 99), ("p999_ms", 99.9)):
            out[key] = round(float(np.percentile(lat, q)), 2)
    return out


def _send_paced(producer: Any, topic: str, stream: Any, n: int, rate: float, prefix: str,
                sent_at: dict[str, float]) -> None:
    """The next ``n`` clicks of ``stream`` at ``rate``/s as live clicks (event time now, event
    ids ``{prefix}-{i}``), each one's send time in ``sent_at``; flushed at the end."""
    start = time.monotonic()
    for i in range(n):
        c = next(stream)
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        eid = f"{prefix}-{i}"
        sent_at[eid] = time.monotonic()
        producer.send(topic, key=c.visitor_id.encode(),
                      value=orjson.dumps({"visitor_id": c.visitor_id, "item_id": c.item_id,
                                          "ts": time.time(), "event_id": eid}))
    producer.flush()


def _read_arrivals(address: str, topic: str, want: int, timeout: float, q: Any, warm: int = 0) -> None:
    """In its own process (the producer's GIL is not its): (event id, monotonic arrival) of
    each message on ``topic``, from the beginning (the topic is new), put on ``q`` at the end;
    first "warm" on ``q`` once ``warm`` answers to warm-up clicks (ids ``*-warm-*``) are in,
    which are not counted in ``want``.
    A widget's reader asks for short fetch waits: the local broker holds a fetch for all of
    it even when data arrives meanwhile, which would be timed as the worker's."""
    from streams.watch import assigned_consumer

    consumer = assigned_consumer(address, topic, from_beginning=True, options={"fetch_max_wait_ms": 5})
    consumer.poll(timeout_ms=100)  # connected and positioned before the first click is sent
    q.put("ready")
    got: list[tuple[str, float]] = []
    warmed = 0
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    eid = orjson.loads(rec.value)["event_id"]
                    if "-warm-" in eid:
                        warmed += 1
                        if warmed == warm:
                            q.put("warm")
                    else:
                        got.append((eid, time.monotonic()))
    finally:
        consumer.close()
        q.put(got)


def produce_replay(address: str, train: list[Any], test: list[Any]) -> None:
    """Publish the train then the test clicks (session id as visitor; event ids ``train-N``,
    ``test-N`` from the row order, so suggestions can be matched back)."""
    producer = make_producer(address)
    for prefix, rows in (("train-", train), ("test-", test)):
        for r in rows:
            producer.send("clicks", key=r.session_id.encode(), value=orjson.dumps(
                {"visitor_id": r.session_id, "item_id": r.item_id, "ts": r.ts,
                 "event_id": f"{prefix}{r.order}"}))
    producer.flush()
    producer.close()


def bench_replay(train_path: str, test_path: str, k: int = 20) -> list[dict[str, Any]]:
    """Quality through Kafka vs the offline replay: same files, one partition, same seed.

    Publishes train then test clicks (SessionId as visitor) to the real broker, collects the
    worker's suggestions by event id, and scores them with the offline protocol."""
    from models.engine import Engine
    from models.evaluate import Scores, evaluate, read_sessions_tsv
    from streams.settings import Settings

    train, test = read_sessions_tsv(train_path), read_sessions_tsv(test_path)
    # Reproducible, and one model with no other copies to share with.
    settings = Settings.from_env(partitions=1, index_background_writes=False, share_interval_s=0.0)
    engine = Engine(settings.session_config(), settings.recommender_config(), k=k)
    offline_lists: dict[tuple[str, int], list[str]] = {}

    def keep(sid: str, pos: int, recs: list[tuple[str, float]]) -> None:
        offline_lists[(sid, pos)] = [i for i, _ in recs]

    report = evaluate(train, test, engine, cutoffs=(k,), baselines=[], dump=keep)
    workdir = Path(tempfile.mkdtemp(prefix="sessionrec-replay-"))
    out: dict[str, Any] = {"bench": "kafka-replay", "offline": report.model.as_dict()}
    with LocalStack(workdir, env={"SESSIONREC_PARTITIONS": "1"}) as stack:
        worker = stack.start_worker("worker")
        worker.wait_ready(180)
        produce_replay(stack.address, train, test)
        want = len(train) + len(test)
        lists: dict[str, list[str]] = {}
        for rec in read_records(stack.address, "recommendations", until=lambda c: c >= want,
                                timeout=1800, idle=120):
            d = orjson.loads(rec.value)
            lists[d["event_id"]] = [i["item_id"] for i in d["items"]]
    by_session: dict[str, list[Any]] = {}
    for r in test:
        by_session.setdefault(r.session_id, []).append(r)
    kafka = Scores((k,))
    same = 0
    for sid, rows in by_session.items():
        for pos in range(len(rows) - 1):
            got = lists.get(f"test-{rows[pos].order}", [])[:k]
            same += got == offline_lists.get((sid, pos), [])[:k]
            kafka.add(got, rows[pos + 1].item_id)
    out["kafka"] = kafka.as_dict()
    out["answered"] = len(lists)
    out["identical_lists_share"] = round(same / max(1, kafka.events), 4)
    out[f"hr@{k}_difference"] = round(out["kafka"][f"hr@{k}"] - out["offline"][f"hr@{k}"], 6)
    return [out]


def wait_answered(workers: list[Worker], want: int, timeout: float) -> None:
    """Until the workers have published ``want`` suggestions between them (their counters:
    no load on the broker), or nothing changed for two minutes."""
    deadline, seen, since = time.monotonic() + timeout, -1.0, time.monotonic()
    while time.monotonic() < deadline:
        done = sum(w.metric("sessionrec_recommendations_total") for w in workers)
        if done >= want:
            return
        if done != seen:
            seen, since = done, time.monotonic()
        elif time.monotonic() - since > 120:
            return
        time.sleep(0.5)


def bench_scale(train_path: str, test_path: str, workers: tuple[int, ...] = (1, 2, 3), k: int = 20,
                partitions: int = 6, tail_reader: bool = False) -> list[dict[str, Any]]:
    """The validation replay through the broker with 1, 2, 3... workers sharing one model.

    For each count: a fresh broker with ``partitions`` partitions (6 divides evenly among 1, 2
    and 3 workers), the workers started and ready, then every train and test click produced
    at once; clicks/s is the rate the suggestions were published, from the first one's record
    timestamp to the last one's, and the test clicks' suggestions are scored as offline (HR@k,
    MRR@k of the next click).

    Nothing reads ``recommendations`` while the workers run: the bench waits on their own
    counters, then reads every suggestion at once. The local broker's in-memory store walks
    every stored batch of a partition on each fetch, so a reader tailing the topic cost it
    2.0 ms of CPU per click against 0.29 ms without one (one worker), and that CPU came out of
    the workers' two cores (``scale_tail_reader``: the same run with a tailing reader, for
    comparison). A consumer of Apache Kafka does not pay that per fetch."""
    from models.evaluate import Scores, read_sessions_tsv

    train, test = read_sessions_tsv(train_path), read_sessions_tsv(test_path)
    by_session: dict[str, list[Any]] = {}
    for r in test:
        by_session.setdefault(r.session_id, []).append(r)
    want = len(train) + len(test)
    lines: list[dict[str, Any]] = []
    for n in workers:
        workdir = Path(tempfile.mkdtemp(prefix=f"sessionrec-scale{n}-"))
        with LocalStack(workdir, env={"SESSIONREC_PARTITIONS": str(partitions)}) as stack:
            procs = [stack.start_worker(f"w{i}") for i in range(n)]
            for w in procs:
                w.wait_ready(300)
            for w in procs:  # a late joiner rebalances the others: all ready at once
                w.wait_ready(300)
            produce_replay(stack.address, train, test)
            if not tail_reader:
                wait_answered(procs, want, timeout=3600)
            lists: dict[str, list[str]] = {}
            first, last = math.inf, -math.inf
            for rec in read_records(stack.address, "recommendations", until=lambda c: c >= want,
                                    timeout=3600, idle=120):
                first, last = min(first, rec.timestamp), max(last, rec.timestamp)
                d = orjson.loads(rec.value)
                lists[d["event_id"]] = [i["item_id"] for i in d["items"]]
            merged = sum(w.metric('sessionrec_model_delta_items_total{direction="merged"}')
                         for w in procs)
        scores = Scores((k,))
        for rows in by_session.values():
            for pos in range(len(rows) - 1):
                scores.add(lists.get(f"test-{rows[pos].order}", [])[:k], rows[pos + 1].item_id)
        line = {"bench": "scale", "workers": n, "partitions": partitions, "clicks": want,
                "scale_tail_reader": tail_reader,
                "answered": len(lists),
                "clicks_per_s": round((len(lists) - 1) / max((last - first) / 1000.0, 1e-9), 1),
                **scores.as_dict(), "delta_items_merged": int(merged)}
        # Against the latest one-worker run before it (the first line if none was one worker):
        # with --workers 1,2,1,2 each pair is measured side by side, as the machine's load drifts.
        ones = [x for x in lines if x["workers"] == 1] or lines[:1]
        if ones and n != 1:
            base = ones[-1]
            line["speedup_vs_1"] = round(line["clicks_per_s"] / base["clicks_per_s"], 3)
            line[f"hr@{k}_ratio_vs_1"] = round(line[f"hr@{k}"] / max(base[f"hr@{k}"], 1e-9), 4)
        lines.append(line)
        print(orjson.dumps(line).decode(), flush=True)
    return lines

