"""The build-side commands: build, eval, rebuild, demo, lint, engine. Their defaults and choices come from the
config classes (distilrt.export.config, distilrt.calib.sets), the one place each is written."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import distilrt
from distilrt.calib.sets import CalibConfig, EvalConfig
from distilrt.config import default_of
from distilrt.errors import UserInputError
from distilrt.export.config import (
    ACTIVATION_SCALES,
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    ENGINE_SOURCES,
    HARDWARE_COMPATIBILITY,
    VARIANTS,
    EngineConfig,
    ExportConfig,
    InvarianceConfig,
    ShapeProfile,
    VerifyConfig,
)
from distilrt.export.int8_search import Int8SearchConfig
from distilrt.manifest import TASKS

DEFAULT_ARTIFACTS = Path("artifacts")


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="hub id (e.g. distilbert-base-uncased-distilled-squad) or local directory")
    parser.add_argument("--task", choices=TASKS, help="default: from the checkpoint's head")
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS, help=f"artifacts directory (default: "
                                                                             f"{DEFAULT_ARTIFACTS})")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument("--opset", type=int, default=default_of(ExportConfig, "opset"), help="ONNX opset")
    parser.add_argument("--task-samples", type=int, default=default_of(VerifyConfig, "task_samples"),
                        help="inputs compared with the transformers pipeline (default %(default)s)")
    parser.add_argument("--variants", default="fp32",
                        help=f"comma-separated: {','.join(VARIANTS)} (default: fp32)")
    parser.add_argument("--calib", help="calibration data: a SQuAD-format JSON (QA) or text file (fill-mask), or "
                                        "datasets:PATH[:CONFIG]:SPLIT with the datasets library installed; "
                                        "default: the shipped SQuAD v1.1 dev / WikiText-2")
    parser.add_argument("--calib-size", type=int, default=default_of(CalibConfig, "size"),
                        help="calibration inputs (default %(default)s)")
    parser.add_argument("--calibration-method", default=DEFAULT_CALIBRATION_METHOD, choices=CALIBRATION_METHODS,
                        help="static int8 (int8-qdq, int8-qdq-trt): ONNX Runtime's calibrator")
    parser.add_argument("--eval-data", help="evaluation file for the gates (default: the held-out split of --calib's "
                                            "source)")
    add_evaluation_size_arguments(parser)
    parser.add_argument("--int8-search", action=argparse.BooleanOptionalAction, default=True,
                        help="accuracy-aware int8 (default on): leave the linear layers int8 hurts most in float, "
                             "by measured sensitivity, until each int8 variant passes its gate on a search split; "
                             "--no-int8-search keeps the spec's recipe as it is")
    parser.add_argument("--max-float-share", type=float, default=default_of(Int8SearchConfig, "max_float_share"),
                        help="--int8-search: most linear layers left in float, as a share (default %(default)s)")
    parser.add_argument("--activation-scales", choices=ACTIVATION_SCALES, default="token",
                        help="int8-dynamic: one scale per token (default: answers do not depend on batch-mates) or "
                             "ONNX Runtime's one per tensor (batch dependent: refused unless --allow-batch-variant)")
    parser.add_argument("--allow-batch-variant", action="store_true",
                        help="publish a bundle that answers differently alone and batched (its manifest says so and "
                             "`distilrt serve` warns); by default it is not published")
    parser.add_argument("--engine", action="store_true",
                        help="also build a TensorRT engine from each GPU-bound variant built (fp32, fp16, "
                             "int8-qdq-trt); needs full TensorRT and a GPU, and is reported as not built (exit 0) "
                             "where they are missing")
    add_engine_options(parser)


def add_evaluation_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-questions", type=int, default=default_of(EvalConfig, "questions"),
                        help="QA gate: held-out questions (default %(default)s)")
    parser.add_argument("--eval-masks", type=int, default=default_of(EvalConfig, "masked_positions"),
                        help="fill-mask gate: masked positions (default %(default)s)")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TensorRT engine options")
    group.add_argument("--profile", action="append", dest="profiles", metavar="B_MIN:OPT:MAX/S_MIN:OPT:MAX",
                       help="an optimization profile: batch and sequence ranges, e.g. 1:8:32/1:128:384 "
                            "(repeatable; default: the bundle's shape profile)")
    group.add_argument("--version-compatible", action="store_true",
                       help="engines later TensorRT 11.x releases and tensorrt_lean can run")
    group.add_argument("--exclude-lean-runtime", action="store_true",
                       help="leave the lean runtime out of a version-compatible plan (needs --version-compatible)")
    group.add_argument("--hardware-compatibility", default=default_of(EngineConfig, "hardware_compatibility"),
                       choices=HARDWARE_COMPATIBILITY, help="GPUs the engine may run on besides the one it is built on")
    group.add_argument("--optimization-level", type=int, default=default_of(EngineConfig, "builder_optimization_level"),
                       help="TensorRT builder optimization level 0-5 (default %(default)s)")
    group.add_argument("--workspace-mb", type=int, help="builder workspace limit (default: TensorRT's)")
    group.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 engines (faster, ~1e-3 error)")
    group.add_argument("--timing-cache-dir", type=Path,
                       help="where timing caches are kept between builds (default: ~/.cache/distilrt/tensorrt, "
                            "or $DISTILRT_CACHE_DIR/tensorrt)")
    group.add_argument("--no-timing-cache", action="store_true", help="do not read or write a timing cache")
    group.add_argument("--device", type=int, default=0, help="CUDA device to build on")
    group.add_argument("--require-engines", action="store_true",
                       help="exit 1 when engines cannot be built here (no TensorRT or GPU) instead of reporting it")


def build(args) -> int:
    from distilrt.export.build import BuildOptions
    from distilrt.export.build_log import build_log_path
    from distilrt.export.derived_bundles import VariantOptions
    from distilrt.export.pipeline import build_checkpoint
    from distilrt.export.variants import parse_variants

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
        int8_search=Int8SearchConfig(max_float_share=args.max_float_share) if args.int8_search else None,
        activation_scales=args.activation_scales,
        invariance=InvarianceConfig(required=not args.allow_batch_variant),
    )
    options = BuildOptions(task=args.task, revision=args.revision, out_dir=args.out,
                           export=ExportConfig(opset=args.opset), verify=VerifyConfig(task_samples=args.task_samples),
                           invariance=InvarianceConfig(required=not args.allow_batch_variant))
    engines = _engine_request(args) if args.engine else None
    built = build_checkpoint(args.checkpoint, variants, options, variant_options, engines)
    print(f"fp32: {built.fp32.path}")
    status = _report_outcomes(built.outcomes, built.summary, args)
    print(f"log: {build_log_path(args.out, args.checkpoint)}")
    return status


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", type=Path,
                        help="the checkpoint's artifacts directory (e.g. artifacts/distilroberta-base: engines from "
                             "every GPU-bound bundle in it) or one bundle (artifacts/distilroberta-base/fp16)")
    parser.add_argument("--sources", help=f"ONNX variants to build engines from (default: whichever of "
                                          f"{', '.join(ENGINE_SOURCES)} are built)")
    add_evaluation_size_arguments(parser)
    add_engine_options(parser)


def engine(args) -> int:
    from distilrt.export.build_log import LOG_FILE, build_log
    from distilrt.export.derived_bundles import VariantOptions
    from distilrt.export.engines.stage import build_engines
    from distilrt.export.pipeline import write_build_summary

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
    request = _engine_request(args)
    log = directory / LOG_FILE
    with build_log(log, append=True) as progress:  # after the build's own lines
        outcomes = build_engines(fp32, sources, request.config, options, timing_cache_dir=request.timing_cache_dir,
                                 device=request.device, progress=progress)
    status = _report_outcomes(outcomes, write_build_summary(fp32, outcomes), args)
    print(f"log: {log}")
    return status


def _engine_request(args):
    from distilrt.export.engines.builder import DEFAULT_TIMING_CACHE_DIR
    from distilrt.export.pipeline import EngineRequest

    config = EngineConfig(profiles=tuple(_parse_profile(p) for p in args.profiles or ()),
                          version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
                          hardware_compatibility=args.hardware_compatibility,
                          builder_optimization_level=args.optimization_level, workspace_mb=args.workspace_mb,
                          tf32=args.tf32)
    cache_dir = None if args.no_timing_cache else (args.timing_cache_dir or DEFAULT_TIMING_CACHE_DIR)
    return EngineRequest(config, cache_dir, args.device)


def _parse_profile(text: str) -> ShapeProfile:
    try:
        batch, sequence = ([int(n) for n in part.split(":")] for part in text.split("/"))
        if len(batch) != 3 or len(sequence) != 3:
            raise ValueError
    except ValueError:
        raise UserInputError(f"--profile {text!r} is not B_MIN:OPT:MAX/S_MIN:OPT:MAX, e.g. 1:8:32/1:128:384") from None
    return ShapeProfile(*batch, *sequence)


def _report_outcomes(outcomes, summary_path: Path, args) -> int:
    """Print each outcome; exit 1 for anything not published except engines that this machine cannot build
    (unless --require-engines)."""
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
    if not Path(path).is_file():
        raise UserInputError(f"data file {path} does not exist")
    if Path(path).stat().st_size == 0:
        raise UserInputError(f"data file {path} is empty; pass a SQuAD-format JSON (QA) or a text file (fill-mask)")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="the bundle to evaluate, e.g. artifacts/<checkpoint>/int8-qdq")
    parser.add_argument("--data", help="SQuAD-format JSON or text file (default: the shipped held-out split)")
    parser.add_argument("--reference", type=Path, help="a bundle to compare with (e.g. the fp32 variant)")
    parser.add_argument("--questions", type=int, default=default_of(EvalConfig, "questions"),
                        help="question-answering: held-out questions")
    parser.add_argument("--masks", type=int, default=default_of(EvalConfig, "masked_positions"),
                        help="fill-mask: masked positions")


def evaluate(args) -> int:
    from distilrt.export.evaluate import evaluate_bundle

    config = EvalConfig(source=args.data, questions=args.questions, masked_positions=args.masks)
    print(json.dumps(evaluate_bundle(args.bundle, config, args.reference), indent=2, ensure_ascii=False))
    return 0


def add_rebuild_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="a bundle whose manifest says how it was built")
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS, help=f"artifacts directory (default: "
                                                                             f"{DEFAULT_ARTIFACTS})")


def rebuild(args) -> int:
    from distilrt.export.rebuild import rebuild as rebuild_bundle
    from distilrt.files import sha256_file

    before = distilrt.read_bundle(args.bundle).manifest
    bundle = rebuild_bundle(args.bundle, args.out)
    compared = (before.onnx_file, before.tokenizer_file)
    same = {name: before.files.get(name) == sha256_file(bundle / name) for name in compared}
    print(bundle)
    print("identical to the original: " + ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in same.items()))
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS / "demo",
                        help="where the bundles and summary.md (the table) go")
    parser.add_argument("--tiny", action="store_true", help="2-layer stand-ins (about a minute) instead of full size")
    parser.add_argument("--checkpoint", action="append", dest="checkpoints",
                        help="only this one (repeatable; default: all five seed checkpoints)")
    parser.add_argument("--keep-checkpoints", type=Path, metavar="DIR",
                        help="keep the stand-in checkpoints in DIR/<checkpoint> (config, weights, tokenizer), to try "
                             "`distilrt build DIR/<checkpoint>` offline (default: deleted after the build)")


def demo(args) -> int:
    from distilrt.export.assets import SEED_CHECKPOINTS
    from distilrt.export.demo import format_table, run_demo, write_summary

    checkpoints = tuple(args.checkpoints or SEED_CHECKPOINTS)
    unknown = sorted(set(checkpoints) - set(SEED_CHECKPOINTS))
    if unknown:
        raise UserInputError(f"--checkpoint {', '.join(unknown)}: the demo has stand-ins of "
                             f"{', '.join(SEED_CHECKPOINTS)} only")
    rows = run_demo(args.out, tiny=args.tiny, checkpoints=checkpoints, keep_checkpoints=args.keep_checkpoints)
    print(format_table(rows))
    print(f"summary: {write_summary(rows, args.out, tiny=args.tiny)}")
    if args.keep_checkpoints is not None:
        print(f"checkpoints: {args.keep_checkpoints} (try: distilrt build {args.keep_checkpoints / checkpoints[0]})")
    return 0


def add_lint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE", help="bundle directories to check")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every report as JSON to FILE")


def lint(args) -> int:
    from distilrt.export.engines.lint import lint_bundle

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


COMMANDS = {
    "build": (add_build_arguments, build),
    "eval": (add_eval_arguments, evaluate),
    "rebuild": (add_rebuild_arguments, rebuild),
    "demo": (add_demo_arguments, demo),
    "lint": (add_lint_arguments, lint),
    "engine": (add_engine_arguments, engine),
}
