"""The ``sessionrec`` command line: broker, worker, produce, watch, demo, evaluate.

Each sub-command imports what it needs when it runs, so ``sessionrec evaluate`` never loads
Faust and ``sessionrec --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.engine import Engine
    from models.evaluate import dump_writer, evaluate, read_sessions_tsv
    from streams.settings import Settings

    settings = Settings.from_env(**({"seed": args.seed} if args.seed is not None else {}))
    train = read_sessions_tsv(args.train)
    test = read_sessions_tsv(args.test)
    engine = Engine(settings.session_config(), settings.recommender_config(), k=max(args.k, 10))
    cutoffs = tuple(sorted({10, args.k}))
    dump_fh = open(args.dump, "w", newline="") if args.dump else None  # noqa: SIM115
    bar = tqdm(total=len(train) + len(test), unit="click", disable=not args.progress,
               file=sys.stderr)
    try:
        report = evaluate(
            train, test, engine, frozen=args.frozen, cutoffs=cutoffs,
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
    print(f"events={report.model.events} train_clicks={len(train)} test_clicks={len(test)}"
          f" mode={'frozen' if args.frozen else 'prequential'}")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sessionrec", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="replay session-rec TSV files offline and score HR/MRR")
    ev.add_argument("--train", required=True)
    ev.add_argument("--test", required=True)
    ev.add_argument("--frozen", action="store_true", help="no learning during the test replay")
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--dump", help="write session-rec's recommendation CSV here")
    ev.add_argument("--json", help="write the figures as JSON here")
    ev.add_argument("--plot", help="draw rolling HR@K over the test stream to this PNG")
    ev.add_argument("--seed", type=int)
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty())
    ev.set_defaults(func=_cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
