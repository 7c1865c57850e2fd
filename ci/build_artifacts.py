"""The artifact job: every checkpoint × variant, the TensorRT readiness lint, and engines where they can be built.

    python ci/build_artifacts.py --out artifacts                       # the real checkpoints (hub or local)
    python ci/build_artifacts.py --stand-ins full --out artifacts      # offline: full-size RANDOM-weight stand-ins
    python ci/build_artifacts.py --stand-ins tiny --out /tmp/a --eval-questions 40 --eval-masks 200 --calib-size 32

For each checkpoint it builds the fp32 bundle and the variants (each verified and gated), lints every bundle
for TensorRT (the GPU-bound ones, fp32, fp16 and int8-qdq-trt, must pass; the others are recorded with the
reason TensorRT refuses them), and builds engines where full TensorRT and a GPU are present. Where they are
not, the lint-clean ONNX bundles are what it publishes, and artifacts/index.json says why engines were skipped.
Exit 1 if a GPU-bound bundle fails the lint or the fp32 build fails; a variant that misses its gate is
recorded, not fatal (random stand-ins are not trained models).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from distilrt.calib.sets import CalibConfig, EvalConfig
from distilrt.errors import DistilrtError
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.build import BuildOptions, build_fp32, print_progress
from distilrt.export.config import ENGINE_SOURCES, EngineConfig
from distilrt.export.engine_bundles import build_engines
from distilrt.export.lint import lint_bundle
from distilrt.export.publish import write_json
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.export.variants import VARIANTS, VariantOptions, build_variants, parse_variants, write_build_summary


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.checkpoints = args.checkpoints or list(SEED_CHECKPOINTS)
    variants = parse_variants(args.variants)
    options = VariantOptions(calib=CalibConfig(size=args.calib_size),
                             evaluation=EvalConfig(questions=args.eval_questions, masked_positions=args.eval_masks))
    engine_config = EngineConfig(version_compatible=args.version_compatible)
    index = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stand_ins": args.stand_ins,
             "checkpoints": {}}
    failures = []
    with tempfile.TemporaryDirectory(prefix="distilrt-ci-") as scratch:
        for name in args.checkpoints:
            print_progress(f"=== {name} ===")
            try:
                entry = _one_checkpoint(name, args, variants, options, engine_config, Path(scratch))
            except DistilrtError as e:
                entry = {"error": str(e)}
                failures.append(f"{name}: {e}")
            failures += [f"{name}/{variant}: {lint['rules']}" for variant, lint in entry.get("lint", {}).items()
                         if variant in ENGINE_SOURCES and not lint["ready"]]
            index["checkpoints"][name] = entry
    write_json(args.out / "index.json", index)
    print(f"index: {args.out / 'index.json'}")
    if failures:
        print("ci: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


def _one_checkpoint(name: str, args, variants, options: VariantOptions, engine_config: EngineConfig,
                    scratch: Path) -> dict:
    checkpoint = name
    if args.stand_ins != "none":
        checkpoint = str(make_random_checkpoint(name, scratch / name, tiny=args.stand_ins == "tiny"))
    fp32 = build_fp32(checkpoint, BuildOptions(out_dir=args.out))
    outcomes = build_variants(fp32, variants, options)
    published = {"fp32": fp32.bundle, **{o.variant: o.bundle for o in outcomes if o.published}}
    lint = {}
    for variant, bundle in published.items():
        report = lint_bundle(bundle)
        lint[variant] = {"ready": bool(report), "rules": sorted(report.rules()), "summary": report.summary()}
        print_progress(f"lint {variant}: {report.summary()}")
    sources = tuple(v for v in ENGINE_SOURCES if v in published and lint[v]["ready"])
    engines = build_engines(fp32, sources, engine_config, options,
                            timing_cache_dir=args.timing_cache_dir) if args.engines else []
    summary = write_build_summary(fp32, outcomes + engines)
    return {
        "bundles": {variant: str(bundle) for variant, bundle in published.items()},
        "not_published": {o.variant: o.reason for o in outcomes if not o.published},
        "lint": lint,
        "engines": {o.variant: {"built": o.published, "bundle": str(o.bundle) if o.bundle else None,
                                "reason": o.reason} for o in engines},
        "build_summary": str(summary),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts"))
    parser.add_argument("--checkpoint", action="append", dest="checkpoints",
                        help="repeatable (default: the five seed checkpoints)")
    parser.add_argument("--stand-ins", choices=("none", "tiny", "full"), default="none",
                        help="build RANDOM-weight stand-ins from the shipped configs instead of the real checkpoints")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--eval-questions", type=int, default=500)
    parser.add_argument("--eval-masks", type=int, default=2000)
    parser.add_argument("--no-engines", dest="engines", action="store_false",
                        help="do not try to build TensorRT engines")
    parser.add_argument("--version-compatible", action="store_true",
                        help="engines that later TensorRT 11.x and tensorrt_lean can run")
    parser.add_argument("--timing-cache-dir", type=Path, default=None,
                        help="keep TensorRT timing caches here between builds (default: no cache)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
