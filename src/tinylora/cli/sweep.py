"""`tinylora sweep`: a grid of runs and the accuracy-vs-bytes report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_no_cache, add_threads


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .._core.distributed import launched
    from ..trainers.sweep import (
        SweepConfig,
        collect,
        command_line,
        report,
        run_sweep,
        write_table,
    )

    if launched():
        raise ValueError("tinylora sweep does not run under torchrun: start one process per shard "
                         "(tinylora sweep --config F --shard I/N)")
    from .._core.threads import set_threads

    sweep = SweepConfig.from_yaml(args.config)
    set_threads(args.threads)
    if args.out:
        sweep.out_dir = args.out
    points = sweep.points()
    print(f"tinylora sweep: {len(points)} points → {sweep.out_dir}" + (f" (shard {args.shard})" if args.shard else ""))
    if args.report_only:
        rows = collect(sweep)
        write_table(rows, Path(sweep.out_dir))
    else:
        try:
            rows = run_sweep(sweep, shard=args.shard)
        except KeyboardInterrupt:
            print("interrupted; run the same command again to finish the remaining points")
            return 130
    path = report(sweep, rows, command_line())
    print(f"{len(rows)} result rows; table {Path(sweep.out_dir) / 'results.csv'}, report {path}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sweep", help="a grid of training runs and the accuracy-vs-bytes report",
        description="Run every point of a grid (method × u × tying × r × algo × lr × seed …; see configs/sweep-toy.yaml), "
                    "each a normal run directory under OUT/points/. Finished points are skipped and interrupted ones "
                    "resumed, so the same command continues a sweep. Writes results.csv/json, accuracy_vs_bytes.png "
                    "and report.md.")
    s.add_argument("--config", required=True, help="sweep YAML: base (TrainConfig keys), grid (key → list), out_dir, "
                                                   "storage_dtypes")
    s.add_argument("--out", help="override the sweep's out_dir")
    s.add_argument("--shard", metavar="I/N", help="run only points k with k %% N == I (start N processes for N shards)")
    s.add_argument("--report-only", action="store_true", help="rebuild the table and report from finished points")
    add_threads(s)
    add_no_cache(s)
    s.set_defaults(func=_cmd_sweep)
