"""The ``sessionrec`` command line: broker, worker, produce, watch, demo, evaluate.

Each sub-command imports what it needs when it runs, so ``sessionrec evaluate`` never loads
Faust and ``sessionrec --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.baselines import GensimItem2Vec, reference_baselines, sessions_of
    from models.engine import Engine
    from models.evaluate import Baseline, dump_writer, evaluate, read_sessions_tsv
    from streams.settings import Settings

    # Index writes in line with the clicks: a replay must give the same figures every run.
    # One model, no other copies: nothing to share (no base kept for sharing).
    settings = Settings.from_env(index_background_writes=False, share_interval_s=0.0,
                                 **({"seed": args.seed} if args.seed is not None else {}))
    train = read_sessions_tsv(args.train)
    test = read_sessions_tsv(args.test)
    engine = Engine(settings.session_config(), settings.recommender_config(), k=max(args.k, 10))
    cutoffs = tuple(sorted({10, args.k}))
    baselines: list[Baseline] = list(reference_baselines())
    if args.gensim_epochs > 0:
        baselines.append(GensimItem2Vec(
            sessions_of((r.session_id, r.item_id) for r in train), args.gensim_epochs,
            dim=settings.dim, window=settings.window, negatives=settings.negatives,
            seed=settings.seed, query_items=settings.query_items,
            recency_decay=settings.recency_decay))
    dump_fh = open(args.dump, "w", newline="") if args.dump else None  # noqa: SIM115
    bar = tqdm(total=len(train) + len(test), unit="click", disable=not args.progress,
               file=sys.stderr)
    try:
        report = evaluate(
            train, test, engine, frozen=args.frozen, cutoffs=cutoffs, baselines=baselines,
            dump=dump_writer(dump_fh) if dump_fh else None,
            progress=bar.update,
        )
    finally:
        bar.close()
        if dump_fh:
            dump_fh.close()
    result = report.as_dict()
    result["frozen"] = args.frozen
    result["k"] = args.k
    result["gensim_epochs"] = args.gensim_epochs
    print(f"events={report.model.events} train_clicks={len(train)} test_clicks={len(test)}"
          f" mode={'frozen' if args.frozen else 'prequential'}"
          + (f" gensim_epochs={args.gensim_epochs}" if args.gensim_epochs > 0 else ""))
    header = "algorithm".ljust(10) + "".join(
        f"{m}@{c}".rjust(10) for c in cutoffs for m in ("HR", "MRR"))
    print(header)
    rows = [("model", report.model)] + list(report.baselines.items())
    for name, sc in rows:
        d = sc.as_dict()
        print(name.ljust(10) + "".join(f"{d[f'{m}@{c}']:10.4f}" for c in cutoffs
                                       for m in ("hr", "mrr")))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, sort_keys=True)
            fh.write("\n")
    if args.plot:
        from streams.plots import plot_hit_trace

        plot_hit_trace(report.hit_trace, args.plot, k=max(cutoffs))
    return 0


def _settings() -> Any:
    from streams.settings import Settings

    return Settings.from_env()


def _cmd_broker(args: argparse.Namespace) -> int:
    from streams.broker import ensure_topics, port_open, start_broker, stop_process

    settings = _settings()
    address = settings.broker_address
    if port_open(address):
        print(f"a broker already listens on {address}")
        ensure_topics(settings)
        return 0
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    proc = start_broker(address, settings.state_dir / "broker.log")
    ensure_topics(settings)
    (settings.state_dir / "broker.pid").write_text(str(proc.pid))
    print(f"broker (tansu, in-memory) ready on {address}, pid {proc.pid}; "
          f"log {settings.state_dir / 'broker.log'}")
    if args.foreground:
        try:
            proc.wait()
        except KeyboardInterrupt:
            stop_process(proc)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from streams.broker import ensure_topics, wait_ready

    settings = _settings()
    wait_ready(settings.broker_address, timeout=60)
    ensure_topics(settings)
    from streams.app import app

    sys.argv = ["sessionrec", "worker", "-l", settings.log_level]
    app.main()
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streams.produce import make_producer, read_clicks, send_clicks, synthetic_clicks

    settings = _settings()
    if args.synthetic:
        clicks: Any = synthetic_clicks(args.clicks, args.items, args.seed,
                                       gap_s=settings.session_gap_s)
        total = args.clicks
    elif args.path:
        clicks = read_clicks(args.path, args.format, args.columns)
        if args.limit:
            clicks = clicks[: args.limit]
        total = len(clicks)
    else:
        print("give a file to replay or --synthetic", file=sys.stderr)
        return 2
    producer = make_producer(settings.broker_address, settings.kafka_options())
    with tqdm(total=total, unit="click", disable=not args.progress, file=sys.stderr) as bar:
        summary = send_clicks(producer, args.topic or settings.clicks_topic, clicks,
                              rate=args.rate, speedup=args.speedup, progress=bar)
    producer.close()
    print(summary.line())
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from streams.watch import format_recommendation, read_records

    settings = _settings()
    shown = 0
    for rec in read_records(settings.broker_address, settings.recommendations_topic,
                            until=(lambda n: bool(args.max) and n >= args.max),
                            timeout=args.seconds, from_beginning=args.from_beginning,
                            options=settings.kafka_options()):
        print(format_recommendation(rec.value, args.top), flush=True)
        shown += 1
    print(f"watched {shown} suggestions", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(_settings(), seconds=args.seconds, rate=args.rate, items=args.items)


def _counts(text: str) -> tuple[int, ...]:
    """``--batch 1,32,128`` -> (1, 32, 128) (also ``--sizes``)."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1: {text!r}")
    return sizes


def _count(text: str) -> int:
    """``--rounds 3`` -> 3 (one integer >= 1)."""
    counts = _counts(text)
    if len(counts) != 1:
        raise argparse.ArgumentTypeError(f"expected one integer >= 1: {text!r}")
    return counts[0]


def _cmd_bench(args: argparse.Namespace) -> int:
    from streams.bench import bench_core, print_lines

    if args.kind == "core":
        if args.plot and not args.curve:
            print("--plot draws the --curve lines: give both", file=sys.stderr)
            return 2
        if args.rounds != 1 and not args.curve:
            print("--rounds repeats the --curve sizes: give both", file=sys.stderr)
            return 2
        lines = bench_core(args.path, args.clicks, args.items, args.dim, seed=args.seed,
                           gensim=args.gensim,
                           curve=(args.sizes or (10_000, 100_000, 1_000_000)) if args.curve else None,
                           batches=args.batch or (1,), learn_rounds=args.learn_rounds,
                           curve_rounds=args.rounds)
        print_lines(lines)
        if args.plot:
            from streams.plots import plot_cost_curve

            plot_cost_curve(lines, args.plot)
        return 0
    if args.kind == "kafka-replay":
        from streams.bench_e2e import bench_replay

        if not (args.path and args.test):
            print("kafka-replay needs TRAIN.tsv and --test TEST.tsv", file=sys.stderr)
            return 2
        print_lines(bench_replay(args.path, args.test))
        return 0
    if args.kind == "transactions":
        from streams.bench_txn import bench_transactions

        print_lines(bench_transactions())
        return 0
    if args.kind == "recovery":
        from streams.bench_recovery import bench_recovery

        # One line as each size finishes (1M takes long).
        for size in args.sizes or (100_000, 1_000_000):
            print_lines(bench_recovery((size,)))
        return 0
    if args.kind == "scale":
        from streams.bench_e2e import bench_scale

        if not (args.path and args.test):
            print("scale needs TRAIN.tsv and --test TEST.tsv", file=sys.stderr)
            return 2
        bench_scale(args.path, args.test, tuple(int(n) for n in args.workers.split(",")),
                    tail_reader=args.tail_reader)
        return 0
    from streams.bench_e2e import bench_e2e

    print_lines(bench_e2e(seconds=args.seconds, items=args.items,
                          batches=args.batch or (1, 64), partitions=args.partitions))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sessionrec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    br = sub.add_parser("broker", help="start the local Kafka-compatible broker (tansu)")
    br.add_argument("--foreground", action="store_true", help="stay attached until Ctrl-C")
    br.set_defaults(func=_cmd_broker)

    wk = sub.add_parser("worker", help="run the Faust worker (same as faust -A streams.app worker)")
    wk.set_defaults(func=_cmd_worker)

    pr = sub.add_parser("produce", help="replay a click file or a synthetic stream into Kafka")
    pr.add_argument("path", nargs="?", help="session-rec TSV, CSV or JSON lines")
    pr.add_argument("--format", choices=["auto", "tsv", "csv", "jsonl"], default="auto")
    pr.add_argument("--columns", help="CSV column mapping, e.g. visitor_id=user,item_id=sku,ts=time")
    pr.add_argument("--synthetic", action="store_true", help="generate realistic sessions instead")
    pr.add_argument("--clicks", type=int, default=10000, help="synthetic clicks to send")
    pr.add_argument("--items", type=int, default=5000, help="synthetic catalogue size")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--limit", type=int, help="send only the first N clicks of the file")
    pr.add_argument("--rate", type=float, help="clicks per second (default: flat out)")
    pr.add_argument("--speedup", type=float, help="event time runs this many times faster")
    pr.add_argument("--topic", help="override the clicks topic")
    pr.add_argument("--progress", action=argparse.BooleanOptionalAction,
                    default=sys.stderr.isatty())
    pr.set_defaults(func=_cmd_produce)

    wa = sub.add_parser("watch", help="print the suggestions a widget receives")
    wa.add_argument("--max", type=int, default=0, help="stop after N suggestions")
    wa.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    wa.add_argument("--top", type=int, default=5, help="items shown per suggestion")
    wa.add_argument("--from-beginning", action=argparse.BooleanOptionalAction, default=False)
    wa.set_defaults(func=_cmd_watch)

    de = sub.add_parser("demo", help="broker + worker + synthetic clicks + watch + metrics")
    de.add_argument("--seconds", type=float, default=60.0, help="how long clicks flow")
    de.add_argument("--rate", type=float, default=200.0, help="clicks per second")
    de.add_argument("--items", type=int, default=2000, help="synthetic catalogue size")
    de.set_defaults(func=_cmd_demo)

    bn = sub.add_parser("bench", help="benchmarks that print JSON lines (core: no Kafka; e2e)")
    bn.add_argument("kind", choices=["core", "e2e", "kafka-replay", "scale", "recovery", "transactions"])
    bn.add_argument("path", nargs="?", help="core: a session-rec TSV to use instead of synthetic; "
                    "kafka-replay, scale: the training TSV")
    bn.add_argument("--test", help="kafka-replay, scale: the test TSV")
    bn.add_argument("--workers", default="1,2,3", help="scale: worker counts to run, one after another "
                    "(each compared with the latest 1 before it: 1,2,1,2 gives two side-by-side pairs)")
    bn.add_argument("--tail-reader", action="store_true",
                    help="scale: read suggestions while the workers run (loads the local broker)")
    bn.add_argument("--sizes", type=_counts, default=None, metavar="N[,N...]",
                    help="recovery: catalogue sizes (default 100000,1000000); "
                    "core --curve: (default 10000,100000,1000000)")
    bn.add_argument("--clicks", type=int, default=1_000_000)
    bn.add_argument("--items", type=int, default=100_000)
    bn.add_argument("--dim", type=int, default=64)
    bn.add_argument("--seed", type=int, default=0)
    bn.add_argument("--seconds", type=float, default=20.0, help="e2e: seconds per phase")
    bn.add_argument("--partitions", type=int, default=1,
                    help="e2e: partitions of every topic (default 1; the local broker's work "
                    "per fetch grows with the record batches stored, one per partition written)")
    bn.add_argument("--gensim", action=argparse.BooleanOptionalAction, default=True)
    bn.add_argument("--learn-rounds", type=int, default=3,
                    help="core: learning alone and gensim, alternated this many times (medians)")
    bn.add_argument("--batch", type=_counts, default=None, metavar="B[,B...]",
                    help="core: clicks learned before one batched recommend (1: per click; "
                    "default 1); e2e: the worker's SESSIONREC_BATCH_MAX (default 1,64); "
                    "several: one line each, same run")
    bn.add_argument("--curve", action="store_true",
                    help="core: one JSON line per catalogue size 10k/100k/1M (catalogue preloaded)")
    bn.add_argument("--rounds", type=_count, default=1,
                    help="core --curve: run every size this many times, in turn (medians)")
    bn.add_argument("--plot", metavar="PNG", help="core --curve: draw clicks/s and p99 against size")
    bn.set_defaults(func=_cmd_bench)

    ev = sub.add_parser("evaluate", help="replay session-rec TSV files offline and score HR/MRR")
    ev.add_argument("--train", required=True)
    ev.add_argument("--test", required=True)
    ev.add_argument("--frozen", action="store_true", help="no learning during the test replay")
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--dump", help="write session-rec's recommendation CSV here")
    ev.add_argument("--json", help="write the figures as JSON here")
    ev.add_argument("--plot", help="draw rolling HR@K over the test stream to this PNG")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--gensim-epochs", type=int, default=0, metavar="N",
                    help="also report gensim Word2Vec (skip-gram, negative sampling, same dim/"
                    "window/negatives/seed) trained N epochs offline on the training sessions "
                    "as baseline 'gensim' (0: off; needs the [bench] extra)")
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty())
    ev.set_defaults(func=_cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from streams.settings import Settings

    Settings.from_env().limit_threads()
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
