"""`distilrt bench` and `distilrt report`: measurement and the regression gate. Defaults come from BenchConfig
and the regression module."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from distilrt.bench.regression import DEFAULT_LATENCY_THRESHOLD
from distilrt.bench.runner import BenchConfig
from distilrt.bench.workloads import DEFAULT_ITEMS
from distilrt.errors import UserInputError, one_line


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BenchConfig()
    parser.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE",
                        help="bundle directories, or artifacts/<checkpoint> for all of its bundles")
    parser.add_argument("--batch", type=int, nargs="+", dest="batches", metavar="N",
                        help=f"batch sizes (default {' '.join(map(str, defaults.batches))})")
    parser.add_argument("--sequence", type=int, nargs="+", dest="sequences", metavar="N",
                        help=f"sequence lengths in tokens (default {' '.join(map(str, defaults.sequences))})")
    parser.add_argument("--repeats", type=int, help=f"timed runs per cell (default {defaults.repeats})")
    parser.add_argument("--warmup", type=int, help=f"untimed runs before each cell (default {defaults.warmup})")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op and torch threads (default: one per physical core)")
    parser.add_argument("--max-seconds", type=float,
                        help="stop repeating a cell after this many seconds of timed runs, at 5 runs or more "
                             f"(default {defaults.max_seconds_per_cell:g})")
    parser.add_argument("--model-only", action="store_true", help="time the model alone, not text in, answers out")
    parser.add_argument("--no-reference", action="store_true", help="leave out PyTorch and Optimum (no ratios)")
    parser.add_argument("--workload", action="append", dest="workloads", metavar="NAME[:N]",
                        help="also run a data set through every runner, text in, answers out, scored against the "
                             "pipeline: squad-dev[:N] (held-out SQuAD dev questions) or wikitext[:N] (held-out "
                             f"WikiText-2 sentences, one word masked); N defaults to {DEFAULT_ITEMS} (repeatable)")
    parser.add_argument("--workload-batch", type=int, metavar="N",
                        help=f"batch size of the workloads' list calls (default {defaults.workload_batch})")
    parser.add_argument("--workload-only", action="store_true",
                        help="run the workloads alone, without the batch x sequence grid")
    parser.add_argument("--json", type=Path, metavar="OUT",
                        help="also write the results here, for `distilrt report` (default: print the table only)")


def bench(args) -> int:
    from distilrt.bench.report import render_bench_markdown
    from distilrt.bench.runner import bench_bundles
    from distilrt.files import write_json

    given = {"batches": args.batches and tuple(args.batches), "sequences": args.sequences and tuple(args.sequences),
             "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
             "max_seconds_per_cell": args.max_seconds, "workloads": args.workloads and tuple(args.workloads),
             "workload_batch": args.workload_batch}
    if args.workload_only and (args.model_only or args.batches or args.sequences):
        raise UserInputError("--workload-only runs no grid: leave out --model-only, --batch and --sequence, "
                             "or drop --workload-only")
    config = replace(BenchConfig(), **{k: v for k, v in given.items() if v is not None},
                     **({"modes": ("model",)} if args.model_only else {}),
                     **({"references": (), "workload_references": ()} if args.no_reference else {}),
                     **({"grid": False} if args.workload_only else {}))
    results = bench_bundles(args.bundles, config)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, results)  # temp file + rename
    print(render_bench_markdown(results))
    if args.json is not None:
        print(f"results: {args.json}")
    failed = {f"{r['checkpoint']}/{r['variant'] or r['runner']}": r.get("skipped_reason")
              for r in [*results["results"], *results["workloads"]] if r["failed"]}
    if failed:
        reasons = "; ".join(f"{name}: {reason}" if reason else name for name, reason in sorted(failed.items()))
        print(f"distilrt: error: the benchmark of {len(failed)} runner(s) failed: {one_line(reasons)}", file=sys.stderr)
        return 1
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benches", type=Path, nargs="+", metavar="BENCH.json", help="`distilrt bench` output files")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="writes DIR/report.json, DIR/report.md and the plots")
    parser.add_argument("--eval", type=Path, action="append", dest="evals", metavar="EVAL.json",
                        help="`distilrt eval` output to add to its bundle's accuracy (repeatable)")
    parser.add_argument("--baseline", type=Path, metavar="OLD_REPORT.json",
                        help="a previous report.json (or bench file): exit 1 if anything got worse")
    parser.add_argument("--latency-threshold", type=float, default=DEFAULT_LATENCY_THRESHOLD,
                        help="how much a variant's p50 / PyTorch p50 may grow over the baseline's "
                             f"(default {DEFAULT_LATENCY_THRESHOLD}: {DEFAULT_LATENCY_THRESHOLD * 100:g}%%)")


def report(args) -> int:
    from distilrt.bench.report import make_report, regression_summary, write_report

    made = make_report(args.benches, args.evals or (), args.baseline, args.latency_threshold)
    for path in write_report(made, args.out):
        print(path)
    failure = regression_summary(made, args.out / "report.md")
    if failure:
        print(f"distilrt: error: {failure}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"bench": (add_bench_arguments, bench), "report": (add_report_arguments, report)}
