"""The `distilrt` command. Build-time modules (torch, transformers, onnx) are imported only by the commands
that need them, so `distilrt run` and `distilrt inspect` work with the lean runtime alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distilrt.errors import DistilrtError, one_line
from distilrt.export.regression import DEFAULT_LATENCY_THRESHOLD  # plain Python: no build-time imports

TASK_CHOICES = ("question-answering", "fill-mask")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DistilrtError as e:
        print(f"distilrt: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("distilrt: interrupted; nothing was published", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilrt", description="Export encoder checkpoints to verified bundles and run them without torch."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="export a checkpoint to a verified fp32 ONNX bundle")
    build.add_argument("checkpoint", help="hub id (e.g. distilbert-base-uncased-distilled-squad) or local directory")
    build.add_argument("--task", choices=TASK_CHOICES, help="default: from the checkpoint's head")
    build.add_argument("--out", type=Path, default=Path("artifacts"), help="artifacts directory (default: artifacts)")
    build.add_argument("--revision", help="hub revision (branch, tag or commit)")
    build.add_argument("--opset", type=int, default=17)
    build.add_argument("--task-samples", type=int, default=24, help="inputs compared with the transformers pipeline")
    build.add_argument("--variants", default="fp32",
                       help="comma-separated: fp32,fused,fp16,int8-dynamic,int8-qdq,int8-qdq-trt (default: fp32)")
    build.add_argument("--calib", help="calibration data: a SQuAD-format JSON (QA) or text file (fill-mask), or "
                                       "datasets:PATH[:CONFIG]:SPLIT with the datasets library installed; "
                                       "default: the shipped SQuAD v1.1 dev / WikiText-2")
    build.add_argument("--calib-size", type=int, default=256, help="calibration inputs (default 256)")
    build.add_argument("--calibration-method", default="Percentile", choices=("MinMax", "Entropy", "Percentile"))
    build.add_argument("--eval-data", help="evaluation file for the gates (default: the held-out split of --calib's source)")
    build.add_argument("--eval-questions", type=int, default=500, help="QA gate: held-out questions (default 500)")
    build.add_argument("--eval-masks", type=int, default=2000, help="fill-mask gate: masked positions (default 2000)")
    build.add_argument("--engine", action="store_true",
                       help="also build a TensorRT engine from each GPU-bound variant built (fp32, fp16, int8-qdq-trt); "
                            "needs full TensorRT and a GPU, and is reported as not built (exit 0) where they are missing")
    _add_engine_options(build)
    build.set_defaults(handler=_build)

    evaluate = commands.add_parser("eval", help="accuracy of a bundle on held-out data (SQuAD EM/F1, masked-token accuracy)")
    evaluate.add_argument("bundle", type=Path)
    evaluate.add_argument("--data", help="SQuAD-format JSON or text file (default: the shipped held-out split)")
    evaluate.add_argument("--reference", type=Path, help="a bundle to compare with (e.g. the fp32 variant)")
    evaluate.add_argument("--questions", type=int, default=500)
    evaluate.add_argument("--masks", type=int, default=2000)
    evaluate.set_defaults(handler=_evaluate)

    run = commands.add_parser("run", help="run a bundle on one input and print the result as JSON")
    run.add_argument("bundle", type=Path)
    run.add_argument("--question", help="question (question-answering bundles)")
    run.add_argument("--context", help="context (question-answering bundles)")
    run.add_argument("--text", help="text with the mask token (fill-mask bundles)")
    run.add_argument("--top-k", type=int, default=None)
    run.add_argument("--backend", help="onnxruntime, onnxruntime-gpu, tensorrt or tensorrt_lean "
                                       "(default: the backend the manifest names)")
    run.add_argument("--fallback", choices=("onnx",),
                     help="run an engine bundle's ONNX where this machine cannot run its engine")
    run.set_defaults(handler=_run)

    inspect = commands.add_parser("inspect", help="check a bundle and print its manifest summary")
    inspect.add_argument("bundle", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the whole manifest")
    inspect.set_defaults(handler=_inspect)

    rebuild = commands.add_parser("rebuild", help="build a bundle again from its manifest alone")
    rebuild.add_argument("bundle", type=Path)
    rebuild.add_argument("--out", type=Path, default=Path("artifacts"), help="artifacts directory (default: artifacts)")
    rebuild.set_defaults(handler=_rebuild)

    demo = commands.add_parser("demo", help="offline: build and verify RANDOM-weight stand-ins of the five seed checkpoints")
    demo.add_argument("--out", type=Path, default=Path("artifacts/demo"))
    demo.add_argument("--tiny", action="store_true", help="2-layer stand-ins (seconds) instead of full size")
    demo.add_argument("--checkpoint", action="append", dest="checkpoints", help="only this one (repeatable)")
    demo.set_defaults(handler=_demo)

    lint = commands.add_parser("lint", help="check bundles' ONNX against what TensorRT's ONNX parser accepts (CPU)")
    lint.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE")
    lint.add_argument("--json", type=Path, metavar="FILE", help="also write every report as JSON to FILE")
    lint.set_defaults(handler=_lint)

    engine = commands.add_parser("engine", help="build TensorRT engine bundles from a checkpoint's built ONNX bundles")
    engine.add_argument("artifacts", type=Path,
                        help="the checkpoint's artifacts directory (e.g. artifacts/distilroberta-base: engines from "
                             "every GPU-bound bundle in it) or one bundle (artifacts/distilroberta-base/fp16)")
    engine.add_argument("--sources", help="ONNX variants to build engines from (default: whichever of fp32, fp16 "
                                          "and int8-qdq-trt are built)")
    engine.add_argument("--eval-questions", type=int, default=500, help="QA gate: held-out questions (default 500)")
    engine.add_argument("--eval-masks", type=int, default=2000, help="fill-mask gate: masked positions (default 2000)")
    _add_engine_options(engine)
    engine.set_defaults(handler=_engine)

    bench = commands.add_parser("bench", help="latency, throughput and peak memory of bundles, next to the "
                                              "transformers pipeline on PyTorch measured in the same run")
    bench.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE",
                       help="bundle directories, or artifacts/<checkpoint> for all of its bundles")
    bench.add_argument("--batch", type=int, nargs="+", dest="batches", metavar="N", help="batch sizes (default 1 8)")
    bench.add_argument("--sequence", type=int, nargs="+", dest="sequences", metavar="N",
                       help="sequence lengths in tokens (default 128 384)")
    bench.add_argument("--repeats", type=int, help="timed runs per cell (default 20)")
    bench.add_argument("--warmup", type=int, help="untimed runs before each cell (default 3)")
    bench.add_argument("--threads", type=int, help="ONNX Runtime intra-op and torch threads (default: all cores)")
    bench.add_argument("--max-seconds", type=float, help="stop repeating a cell after this many seconds of timed "
                                                         "runs, at 5 runs or more (default 20)")
    bench.add_argument("--model-only", action="store_true", help="time the model alone, not text in, answers out")
    bench.add_argument("--no-reference", action="store_true", help="leave out PyTorch and Optimum (no ratios)")
    bench.add_argument("--json", type=Path, required=True, metavar="OUT", help="write the results here")
    bench.set_defaults(handler=_bench)

    report = commands.add_parser("report", help="accuracy and latency of benchmarked bundles as JSON, Markdown and "
                                                "PNG plots; with --baseline, exit 1 on any regression")
    report.add_argument("benches", type=Path, nargs="+", metavar="BENCH.json", help="`distilrt bench` output files")
    report.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="writes DIR/report.json, DIR/report.md and the plots")
    report.add_argument("--eval", type=Path, action="append", dest="evals", metavar="EVAL.json",
                        help="`distilrt eval` output to add to its bundle's accuracy (repeatable)")
    report.add_argument("--baseline", type=Path, metavar="OLD_REPORT.json",
                        help="a previous report.json (or bench file): exit 1 if anything got worse")
    report.add_argument("--latency-threshold", type=float, default=DEFAULT_LATENCY_THRESHOLD,
                        help="how much a variant's p50 / PyTorch p50 may grow over the baseline's "
                             f"(default {DEFAULT_LATENCY_THRESHOLD}: {DEFAULT_LATENCY_THRESHOLD * 100:g}%%)")
    report.set_defaults(handler=_report)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TensorRT engine options")
    group.add_argument("--profile", action="append", dest="profiles", metavar="B_MIN:OPT:MAX/S_MIN:OPT:MAX",
                       help="an optimization profile: batch and sequence ranges, e.g. 1:8:32/1:128:384 "
                            "(repeatable; default: the bundle's shape profile)")
    group.add_argument("--version-compatible", action="store_true",
                       help="engines later TensorRT 11.x releases and tensorrt_lean can run")
    group.add_argument("--exclude-lean-runtime", action="store_true",
                       help="leave the lean runtime out of a version-compatible plan (needs --version-compatible)")
    group.add_argument("--hardware-compatibility", default="none",
                       choices=("none", "ampere_plus", "same_compute_capability"))
    group.add_argument("--optimization-level", type=int, default=3, help="TensorRT builder optimization level 0-5")
    group.add_argument("--workspace-mb", type=int, help="builder workspace limit (default: TensorRT's)")
    group.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 engines (faster, ~1e-3 error)")
    group.add_argument("--timing-cache-dir", type=Path,
                       help="where timing caches are kept between builds (default: ~/.cache/distilrt/tensorrt, "
                            "or $DISTILRT_CACHE_DIR/tensorrt)")
    group.add_argument("--no-timing-cache", action="store_true", help="do not read or write a timing cache")
    group.add_argument("--device", type=int, default=0, help="CUDA device to build on")
    group.add_argument("--require-engines", action="store_true",
                       help="exit 1 when engines cannot be built here (no TensorRT or GPU) instead of reporting it")


def _build(args) -> int:
    from distilrt.calib.sets import CalibConfig, EvalConfig
    from distilrt.export.build import BuildOptions, build_fp32
    from distilrt.export.config import ExportConfig, VerifyConfig
    from distilrt.export.variants import VariantOptions, build_variants, parse_variants

    variants = parse_variants(args.variants)
    # Validate every option before the minutes of work start.
    for data_file in (args.calib, args.eval_data):
        if data_file is not None and not data_file.startswith("datasets:"):
            _check_data_file(data_file)
    variant_options = VariantOptions(
        calib=CalibConfig(source=args.calib, size=args.calib_size),
        evaluation=EvalConfig(source=args.eval_data or args.calib, questions=args.eval_questions,
                              masked_positions=args.eval_masks),
        calibration_method=args.calibration_method,
    )
    options = BuildOptions(task=args.task, revision=args.revision, out_dir=args.out,
                           export=ExportConfig(opset=args.opset), verify=VerifyConfig(task_samples=args.task_samples))
    engine_config = _engine_config(args) if args.engine else None
    fp32 = build_fp32(args.checkpoint, options)
    outcomes = build_variants(fp32, variants, variant_options)
    if engine_config is not None:
        from distilrt.export.config import ENGINE_SOURCES
        from distilrt.export.engine_bundles import build_engines

        sources = tuple(v for v in variants if v in ENGINE_SOURCES)
        outcomes += build_engines(fp32, sources, engine_config, variant_options, **_engine_machine_options(args))
    print(f"fp32: {fp32.bundle}")
    return _report_outcomes(fp32, outcomes, args)


def _engine(args) -> int:
    from distilrt.calib.sets import EvalConfig
    from distilrt.export.build import BuildResult
    from distilrt.export.engine_bundles import build_engines
    from distilrt.export.variants import VariantOptions

    import distilrt

    from distilrt.export.config import ENGINE_SOURCES

    is_bundle = (args.artifacts / "manifest.json").is_file()
    directory = args.artifacts.parent if is_bundle else args.artifacts
    fp32 = distilrt.read_bundle(directory / "fp32")
    if args.sources:
        sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    elif is_bundle:  # `distilrt engine artifacts/x/fp16`: that bundle's engine
        sources = (distilrt.read_bundle(args.artifacts, check_hashes=False).variant,)
    else:
        sources = tuple(s for s in ENGINE_SOURCES if (directory / s / "manifest.json").is_file())
    options = VariantOptions(evaluation=EvalConfig(questions=args.eval_questions, masked_positions=args.eval_masks))
    outcomes = build_engines(BuildResult(fp32.path, fp32.manifest, 0.0), sources, _engine_config(args), options,
                             **_engine_machine_options(args))
    return _report_outcomes(BuildResult(fp32.path, fp32.manifest, 0.0), outcomes, args)


def _engine_config(args):
    from distilrt.export.config import EngineConfig

    return EngineConfig(profiles=tuple(_parse_profile(p) for p in args.profiles or ()),
                        version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
                        hardware_compatibility=args.hardware_compatibility,
                        builder_optimization_level=args.optimization_level, workspace_mb=args.workspace_mb,
                        tf32=args.tf32)


def _engine_machine_options(args) -> dict:
    from distilrt.export.engine import DEFAULT_TIMING_CACHE_DIR

    cache_dir = None if args.no_timing_cache else (args.timing_cache_dir or DEFAULT_TIMING_CACHE_DIR)
    return {"timing_cache_dir": cache_dir, "device": args.device}


def _parse_profile(text: str):
    from distilrt.errors import UserInputError
    from distilrt.export.config import ShapeProfile

    try:
        batch, sequence = ([int(n) for n in part.split(":")] for part in text.split("/"))
        if len(batch) != 3 or len(sequence) != 3:
            raise ValueError
    except ValueError:
        raise UserInputError(f"--profile {text!r} is not B_MIN:OPT:MAX/S_MIN:OPT:MAX, e.g. 1:8:32/1:128:384") from None
    return ShapeProfile(*batch, *sequence)


def _report_outcomes(fp32, outcomes, args) -> int:
    """Print each outcome, write build-summary.json; exit 1 for anything not published except engines that this
    machine cannot build (unless --require-engines)."""
    from distilrt.export.variants import write_build_summary

    summary_path = write_build_summary(fp32, outcomes)
    for outcome in outcomes:
        state = "skipped" if outcome.skipped else "NOT published"
        print(f"{outcome.variant}: " + (str(outcome.bundle) if outcome.published else f"{state}: {outcome.reason}"))
    print(f"summary: {summary_path}")
    require_engines = getattr(args, "require_engines", False)
    failed = [o.variant for o in outcomes if not o.published and (require_engines or not o.skipped)]
    if failed:
        print(f"distilrt: error: not published: {', '.join(failed)} (see {summary_path})", file=sys.stderr)
        return 1
    return 0


def _check_data_file(path: str) -> None:
    """Fail in a second on a missing or empty data file; its contents are checked when the set is made."""
    from distilrt.errors import UserInputError

    if not Path(path).is_file():
        raise UserInputError(f"data file {path} does not exist")
    if Path(path).stat().st_size == 0:
        raise UserInputError(f"data file {path} is empty; pass a SQuAD-format JSON (QA) or a text file (fill-mask)")


def _evaluate(args) -> int:
    from distilrt.calib.sets import EvalConfig
    from distilrt.export.evaluate import evaluate_bundle

    config = EvalConfig(source=args.data, questions=args.questions, masked_positions=args.masks)
    print(json.dumps(evaluate_bundle(args.bundle, config, args.reference), indent=2, ensure_ascii=False))
    return 0


def _run(args) -> int:
    import distilrt
    from distilrt.errors import UserInputError

    head = distilrt.load(args.bundle, backend=args.backend, fallback=args.fallback)
    kwargs = {} if args.top_k is None else {"top_k": args.top_k}
    task = distilrt.read_bundle(args.bundle, check_hashes=False).task
    if task == "question-answering":
        if args.question is None or args.context is None or args.text is not None:
            raise UserInputError("a question-answering bundle takes --question and --context (not --text)")
        result = head(question=args.question, context=args.context, **kwargs)
    else:
        if args.text is None or args.question is not None or args.context is not None:
            raise UserInputError("a fill-mask bundle takes --text (with the mask token), not --question/--context")
        result = head(args.text, **kwargs)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def _rebuild(args) -> int:
    import distilrt
    from distilrt.bundle import sha256_file
    from distilrt.export.rebuild import rebuild

    before = distilrt.read_bundle(args.bundle).manifest["files"]
    bundle = rebuild(args.bundle, args.out)
    same = {name: before.get(name) == sha256_file(bundle / name) for name in ("model.onnx", "tokenizer.json")}
    print(bundle)
    print("identical to the original: " + ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in same.items()))
    return 0


def _inspect(args) -> int:
    import distilrt

    bundle = distilrt.read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m, indent=2, ensure_ascii=False))
        return 0
    source = m["source"]
    verification = m.get("verification", {})
    lines = [
        f"bundle:        {bundle.path} (schema {m['schema_version']}, files and hashes OK)",
        f"source:        {source['id']}" + (f" (revision {source['revision']})" if source.get("revision") else ""),
        *([f"               RANDOM weights: a stand-in for {source['stand_in']['checkpoint']} "
           f"({'tiny' if source['stand_in']['tiny'] else 'full size'}, seed {source['stand_in']['seed']})"]
          if source.get("random_weights") else []),
        f"task:          {m['task']} ({m['architecture']}), variant {m['variant']}",
        f"model:         {m['model']['file']} for {m['model']['backend']}; inputs "
        + ", ".join(i["name"] for i in m["model"]["inputs"]) + " -> " + ", ".join(o["name"] for o in m["model"]["outputs"]),
        f"verification:  {'passed' if verification.get('passed') else 'NOT passed'}; "
        + json.dumps(verification.get("task", {}), ensure_ascii=False),
        "tools:         " + ", ".join(f"{k} {v}" for k, v in m.get("tools", {}).items() if v),
    ]
    if "engine" in m:
        engine = m["engine"]
        lines.append(f"engine:        TensorRT {engine['tensorrt_version']} on {engine['gpu']['name']} (compute "
                     f"capability {engine['gpu']['compute_capability']}); version_compatible "
                     f"{engine['version_compatible']}, hardware_compatibility {engine['hardware_compatibility']}")
        lines.append(f"fallback:      {m['fallback']['file']} for {m['fallback']['backend']}")
    print("\n".join(lines))
    return 0


def _demo(args) -> int:
    from distilrt.export.assets import SEED_CHECKPOINTS
    from distilrt.export.demo import format_table, run_demo

    checkpoints = tuple(args.checkpoints or SEED_CHECKPOINTS)
    rows = run_demo(args.out, tiny=args.tiny, checkpoints=checkpoints)
    print(format_table(rows))
    return 0


def _lint(args) -> int:
    from distilrt.export.lint import lint_bundle

    reports = [lint_bundle(bundle) for bundle in args.bundles]
    for bundle, report in zip(args.bundles, reports):
        print(f"{bundle}: " + report.summary().replace("\n", "\n  "))
    if args.json is not None:
        args.json.write_text(json.dumps([report.to_dict() for report in reports], indent=2, ensure_ascii=False))
    rejected = [(bundle, report) for bundle, report in zip(args.bundles, reports) if not report]
    if rejected:
        reasons = "; ".join(f"{bundle} ({', '.join(sorted(report.rules()))})" for bundle, report in rejected)
        print(f"distilrt: error: {len(rejected)} of {len(reports)} bundles not ready for TensorRT: {reasons}",
              file=sys.stderr)
        return 1
    return 0


def _bench(args) -> int:
    from dataclasses import replace

    from distilrt.export.bench import BenchConfig, bench_bundles
    from distilrt.export.publish import write_json
    from distilrt.export.report import render_bench_markdown

    given = {"batches": args.batches and tuple(args.batches), "sequences": args.sequences and tuple(args.sequences),
             "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
             "max_seconds_per_cell": args.max_seconds}
    config = replace(BenchConfig(), **{k: v for k, v in given.items() if v is not None},
                     **({"modes": ("model",)} if args.model_only else {}),
                     **({"references": ()} if args.no_reference else {}))
    bench = bench_bundles(args.bundles, config)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, bench)  # temp file + rename
    print(render_bench_markdown(bench))
    print(f"results: {args.json}")
    failed = sorted({f"{r['checkpoint']}/{r['variant'] or r['runner']}" for r in bench["results"] if r["failed"]})
    if failed:
        print(f"distilrt: error: the benchmark of {', '.join(failed)} failed (see {args.json})", file=sys.stderr)
        return 1
    return 0


def _report(args) -> int:
    from distilrt.export.report import make_report, regression_summary, write_report

    report = make_report(args.benches, args.evals or (), args.baseline, args.latency_threshold)
    for path in write_report(report, args.out):
        print(path)
    failure = regression_summary(report, args.out / "report.md")
    if failure:
        print(f"distilrt: error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
