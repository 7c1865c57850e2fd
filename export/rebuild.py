"""Rebuild a bundle from its manifest alone: same source, same stage configs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from distilrt.bundle import read_bundle
from distilrt.calib.sets import CalibConfig, EvalConfig
from distilrt.errors import CapabilityError, VerificationError
from distilrt.export.build import BuildOptions, BuildResult, Progress, build_fp32, print_progress
from distilrt.export.config import (GATES, EngineConfig, ExportConfig, FuseConfig, Gate, ShapeProfile, Tolerances,
                                    VerifyConfig, gate_key)
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.export.variants import VariantOptions, build_variants


def options_from_manifest(manifest: dict, out_dir: Path) -> BuildOptions:
    stages = manifest["stages"]
    return BuildOptions(
        task=manifest["task"],
        revision=manifest["source"].get("revision"),
        out_dir=out_dir,
        export=ExportConfig.from_dict(stages["export"]),
        verify=VerifyConfig.from_dict(stages["verify"]),
        tolerances=Tolerances.from_dict(stages["tolerances"]),
        shape_profile=ShapeProfile.from_dict(manifest["shape_profile"]),
    )


def variant_options_from_manifest(manifest: dict) -> VariantOptions:
    stages = manifest["stages"]
    gate = Gate.from_dict(stages["gate"])
    precision = stages.get("precision") or {}
    return VariantOptions(
        fuse=FuseConfig.from_dict(stages["fuse"]) if "fuse" in stages else FuseConfig(),
        calib=CalibConfig.from_dict(stages["calibration"]) if "calibration" in stages else CalibConfig(),
        evaluation=EvalConfig.from_dict(stages["evaluation"]),
        calibration_method=precision.get("calibration_method") or "Percentile",
        gates={**GATES, gate_key(manifest["variant"]): gate},
    )


def rebuild(bundle_path: Path, out_dir: Path, progress: Progress = print_progress) -> Path:
    """Build the bundle again into out_dir; a derived variant is rebuilt with its fp32 reference first."""
    manifest = read_bundle(bundle_path).manifest
    fp32 = _rebuild_fp32(manifest, out_dir, progress)
    engine_source = manifest["stages"].get("engine_source", {}).get("variant")
    onnx_variant = engine_source or manifest["variant"]
    if onnx_variant != "fp32":
        (outcome,) = build_variants(fp32, (onnx_variant,), variant_options_from_manifest(manifest), progress)
        _check_published(outcome)
    if engine_source is None:
        return fp32.bundle if onnx_variant == "fp32" else outcome.bundle
    # An engine bundle: its ONNX source first, then the engine with the recorded EngineConfig (on a GPU machine).
    from distilrt.export.engine_bundles import build_engines

    (outcome,) = build_engines(fp32, (engine_source,), EngineConfig.from_dict(manifest["stages"]["engine"]),
                               variant_options_from_manifest(manifest), progress=progress)
    _check_published(outcome)
    return outcome.bundle


def _check_published(outcome) -> None:
    if outcome.skipped:
        raise CapabilityError(f"{outcome.variant} cannot be rebuilt here: {outcome.reason}")
    if not outcome.published:
        raise VerificationError(f"the rebuilt {outcome.variant} was not published: {outcome.reason}")


def _rebuild_fp32(manifest: dict, out_dir: Path, progress: Progress) -> BuildResult:
    options = options_from_manifest(manifest, out_dir)
    stand_in = manifest["source"].get("stand_in")
    if stand_in is None:
        return build_fp32(manifest["source"]["id"], options, progress)
    # A RANDOM-weight stand-in is made again from its recipe, under the same directory name.
    with tempfile.TemporaryDirectory(prefix="distilrt-rebuild-") as scratch:
        name = Path(manifest["source"]["id"]).name
        directory = make_random_checkpoint(
            stand_in["checkpoint"], Path(scratch) / name, tiny=stand_in["tiny"], seed=stand_in["seed"],
            head_scale=stand_in["head_scale"],
        )
        return build_fp32(str(directory), options, progress)
