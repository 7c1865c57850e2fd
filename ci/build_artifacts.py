"""The artifact job: every checkpoint × variant, the TensorRT readiness lint, engines where they can be built,
then a benchmark of every bundle next to the PyTorch pipeline and the report (with the regression gate).

    python ci/build_artifacts.py --out artifacts                       # the real checkpoints (hub or local)
    python ci/build_artifacts.py --stand-ins full --out artifacts      # offline: full-size RANDOM-weight stand-ins
    python ci/build_artifacts.py --stand-ins tiny --out artifacts --eval-questions 40 --eval-masks 200 \
        --calib-size 32 --bench-repeats 5 --bench-max-seconds 2     # the CPU matrix on tiny models (CI)

For each checkpoint it builds the fp32 bundle and the variants (each verified and gated), lints every bundle
for TensorRT (the GPU-bound ones, fp32, fp16 and int8-qdq-trt, must pass; the others are recorded with the
reason TensorRT refuses them), and builds engines where full TensorRT and a GPU are present. Where they are
not, the lint-clean ONNX bundles are what it publishes, and artifacts/index.json says why engines were skipped.
The benchmark (`distilrt bench`, in one run over every bundle) goes to OUT/bench.json and the report
(`distilrt report`: JSON, Markdown, PNG plots) to OUT/report/; with --baseline the report is gated against an
earlier report.json.

It first checks that the installed build stack is the one ci/constraints-artifacts.txt pins (the versions the
gate values were measured with; ci/freeze_constraints.py) and stops, naming each difference, if it is not;
--allow-drift builds anyway and records the differences in index.json.

Exit 1 if a GPU-bound bundle fails the lint, the fp32 build fails, a benchmark fails or the report regressed
against the baseline; a variant that misses its gate is recorded, not fatal (random stand-ins are not trained
models).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from freeze_constraints import CONSTRAINTS, drift, read_constraints  # ci/ is this script's first sys.path entry

from distilrt.bench.regression import DEFAULT_LATENCY_THRESHOLD
from distilrt.bench.report import make_report, regression_summary, write_report
from distilrt.bench.runner import BenchConfig, bench_bundles
from distilrt.calib.sets import CalibConfig, EvalConfig
from distilrt.config import default_of
from distilrt.errors import DistilrtError
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.build import BuildOptions
from distilrt.export.config import ENGINE_SOURCES, VARIANTS, EngineConfig
from distilrt.export.derived_bundles import VariantOptions
from distilrt.export.engines.lint import lint_bundle
from distilrt.export.pipeline import EngineRequest, build_checkpoint
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.export.variants import parse_variants
from distilrt.files import write_json
from distilrt.progress import print_progress
from distilrt.provenance import tool_versions


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.checkpoints = args.checkpoints or list(SEED_CHECKPOINTS)
    variants = parse_variants(args.variants)
    options = VariantOptions(calib=CalibConfig(size=args.calib_size),
                             evaluation=EvalConfig(questions=args.eval_questions, masked_positions=args.eval_masks))
    engines = EngineRequest(EngineConfig(version_compatible=args.version_compatible),
                            timing_cache_dir=args.timing_cache_dir) if args.engines else None
    try:
        bench_config = _bench_config(args)  # bad benchmark settings fail here, not after the builds
    except DistilrtError as e:
        raise SystemExit(f"ci: error: {e}") from None
    if args.baseline is not None and not args.baseline.is_file():
        raise SystemExit(f"ci: error: the baseline {args.baseline} does not exist; pass an earlier report.json")
    index = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stand_ins": args.stand_ins,
             "constraints": _check_constraints(args.constraints, args.allow_drift), "checkpoints": {}}
    failures = []
    with tempfile.TemporaryDirectory(prefix="distilrt-ci-") as scratch:
        for name in args.checkpoints:
            print_progress(f"=== {name} ===")
            try:
                entry = _one_checkpoint(name, args, variants, options, engines, Path(scratch))
            except DistilrtError as e:
                entry = {"error": str(e)}
                failures.append(f"{name}: {e}")
            failures += [f"{name}/{variant}: {lint['rules']}" for variant, lint in entry.get("lint", {}).items()
                         if variant in ENGINE_SOURCES and not lint["ready"]]
            index["checkpoints"][name] = entry
        if args.bench:  # while the stand-in checkpoints the PyTorch reference loads are still in scratch
            bundles = [bundle for entry in index["checkpoints"].values() for bundle in entry.get("bundles", {}).values()]
            index["bench"], failed = _bench_and_report(bundles, bench_config, args)
            failures += failed
    write_json(args.out / "index.json", index)
    print(f"index: {args.out / 'index.json'}")
    if failures:
        print("ci: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def _check_constraints(path: Path, allow_drift: bool) -> dict:
    """The installed build stack against the pinned one, before anything is built. The tools every manifest
    records (distilrt.provenance.tool_versions) are compared as recorded; the rest of the stack as installed."""
    try:
        problems = drift(read_constraints(path), tool_versions())
    except SystemExit as e:  # a missing or malformed file: its message names the fix
        raise SystemExit(f"ci: error: {e}") from None
    if problems and not allow_drift:
        raise SystemExit(
            f"ci: error: this environment is not the build stack {path} pins, which the gate values were measured "
            f"with: {'; '.join(problems)}. Install with `pip install -c {path} ...` as .ci/run does; after a "
            "deliberate bump, regenerate the file with `python ci/freeze_constraints.py`; or pass --allow-drift to "
            "build anyway (the figures are then not comparable with the pinned stack's)")
    for problem in problems:
        print_progress(f"constraints: {problem} (--allow-drift)")
    return {"file": str(path), "drift": problems, "allowed_drift": allow_drift}


def _one_checkpoint(name: str, args, variants, options: VariantOptions, engines: EngineRequest | None,
                    scratch: Path) -> dict:
    checkpoint = name
    if args.stand_ins != "none":
        checkpoint = str(make_random_checkpoint(name, scratch / name, tiny=args.stand_ins == "tiny"))
    built = build_checkpoint(checkpoint, variants, BuildOptions(out_dir=args.out), options, engines)
    published = {variant: bundle for variant, bundle in built.published.items() if variant in variants}
    lint = {}
    for variant, bundle in published.items():
        report = lint_bundle(bundle)
        lint[variant] = {"ready": bool(report), "rules": sorted(report.rules()), "summary": report.summary()}
        print_progress(f"lint {variant}: {report.summary()}")
    return {
        "bundles": {variant: str(bundle) for variant, bundle in published.items()},
        "not_published": {o.variant: o.reason for o in built.variants if not o.published},
        "lint": lint,
        "engines": {o.variant: {"built": o.published, "bundle": str(o.bundle) if o.bundle else None,
                                "reason": o.reason} for o in built.engines},
        "build_summary": str(built.summary),
    }


def _bench_config(args) -> BenchConfig:
    return BenchConfig(batches=tuple(args.bench_batches), sequences=tuple(args.bench_sequences),
                       repeats=args.bench_repeats, warmup=args.bench_warmup, threads=args.bench_threads,
                       max_seconds_per_cell=args.bench_max_seconds)


def _bench_and_report(bundles: list[str], config: BenchConfig, args) -> tuple[dict, list[str]]:
    """Benchmark every bundle in one run, render the report, gate it against the baseline if one was given."""
    if not bundles:
        return {"skipped_reason": "no bundle was published"}, []
    print_progress(f"=== benchmark: {len(bundles)} bundles, batch {config.batches} x sequence {config.sequences} ===")
    bench = bench_bundles(bundles, config)
    bench_path = args.out / "bench.json"
    write_json(bench_path, bench)
    report = make_report([bench_path], baseline=args.baseline, latency_threshold=args.latency_threshold)
    written = write_report(report, args.out / "report")
    print_progress(f"report: {written[1]}")
    failures = sorted({f"benchmark of {r['checkpoint']}/{r['variant'] or r['runner']} failed: {r['skipped_reason']}"
                       for r in bench["results"] if r["failed"]})
    regressed = regression_summary(report, written[1])
    return ({"bench": str(bench_path), "report": str(written[1]),
             "passed_baseline": None if report["comparison"] is None else report["comparison"]["passed"]},
            failures + ([regressed] if regressed else []))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts"))
    parser.add_argument("--checkpoint", action="append", dest="checkpoints",
                        help="repeatable (default: the five seed checkpoints)")
    parser.add_argument("--stand-ins", choices=("none", "tiny", "full"), default="none",
                        help="build RANDOM-weight stand-ins from the shipped configs instead of the real checkpoints")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calib-size", type=int, default=default_of(CalibConfig, "size"))
    parser.add_argument("--eval-questions", type=int, default=default_of(EvalConfig, "questions"))
    parser.add_argument("--eval-masks", type=int, default=default_of(EvalConfig, "masked_positions"))
    parser.add_argument("--no-engines", dest="engines", action="store_false",
                        help="do not try to build TensorRT engines")
    parser.add_argument("--version-compatible", action="store_true",
                        help="engines that later TensorRT 11.x and tensorrt_lean can run")
    parser.add_argument("--timing-cache-dir", type=Path, default=None,
                        help="keep TensorRT timing caches here between builds (default: no cache)")
    parser.add_argument("--constraints", type=Path, default=CONSTRAINTS,
                        help="the pinned build stack the environment must match (default: %(default)s)")
    parser.add_argument("--allow-drift", action="store_true",
                        help="build even if the environment differs from --constraints; index.json records how")
    bench = parser.add_argument_group("benchmark and report")
    defaults = BenchConfig()
    bench.add_argument("--no-bench", dest="bench", action="store_false", help="build and lint only")
    bench.add_argument("--bench-batch", type=int, nargs="+", dest="bench_batches", default=list(defaults.batches),
                       metavar="N")
    bench.add_argument("--bench-sequence", type=int, nargs="+", dest="bench_sequences",
                       default=list(defaults.sequences), metavar="N")
    bench.add_argument("--bench-repeats", type=int, default=defaults.repeats, help="timed runs per cell")
    bench.add_argument("--bench-warmup", type=int, default=defaults.warmup, help="untimed runs before each cell")
    bench.add_argument("--bench-threads", type=int, default=defaults.threads, help="default: one per physical core")
    bench.add_argument("--bench-max-seconds", type=float, default=defaults.max_seconds_per_cell,
                       help="stop repeating a cell after this many seconds of timed runs")
    bench.add_argument("--baseline", type=Path, default=None, metavar="OLD_REPORT.json",
                       help="gate the report against an earlier report.json: exit 1 on any regression")
    bench.add_argument("--latency-threshold", type=float, default=DEFAULT_LATENCY_THRESHOLD,
                       help="how much a variant's p50 / PyTorch p50 may grow over the baseline's (0.10: 10%%)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
