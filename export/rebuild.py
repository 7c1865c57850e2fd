"""Rebuild a bundle from its manifest alone: same source, same stage configs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from distilrt.bundle import read_bundle
from distilrt.calib.sets import CalibConfig, EvalConfig
from distilrt.errors import CapabilityError, VerificationError
from distilrt.export.build import BuildOptions, BuildResult, build_fp32
from distilrt.export.config import (
    DEFAULT_CALIBRATION_METHOD,
    GATES,
    EngineConfig,
    ExportConfig,
    FuseConfig,
    Gate,
    InvarianceConfig,
    PrecisionConfig,
    ShapeProfile,
    Tolerances,
    VerifyConfig,
    gate_key,
)
from distilrt.export.derived_bundles import VariantOptions
from distilrt.export.random_checkpoint import make_random_checkpoint
from distilrt.export.variants import build_variants
from distilrt.manifest import Manifest
from distilrt.progress import Progress, print_progress


def options_from_manifest(manifest: Manifest, out_dir: Path) -> BuildOptions:
    return BuildOptions(
        task=manifest.task,
        revision=manifest.source.revision,
        out_dir=out_dir,
        export=ExportConfig.from_dict(manifest.stage("export")),
        verify=VerifyConfig.from_dict(manifest.stage("verify")),
        tolerances=Tolerances.from_dict(manifest.stage("tolerances")),
        shape_profile=ShapeProfile.from_dict(manifest.shape_profile),
        invariance=invariance_from_manifest(manifest),
    )


def invariance_from_manifest(manifest: Manifest) -> InvarianceConfig:
    """The recorded batch-invariance check (its config beside its outcome); the default where none was made."""
    record = manifest.stage("invariance")
    if record is None:
        return InvarianceConfig()
    return InvarianceConfig.from_dict({k: v for k, v in record.items() if k != "passed"})


def variant_options_from_manifest(manifest: Manifest) -> VariantOptions:
    fuse, calibration, precision = manifest.stage("fuse"), manifest.stage("calibration"), manifest.stage("precision")
    # The recorded precision config as it is (with any layers an int8 search left in float): no search again.
    onnx_variant = manifest.engine_source_variant or manifest.variant
    recorded = {} if precision is None else {onnx_variant: PrecisionConfig.from_dict(precision)}
    return VariantOptions(
        fuse=FuseConfig() if fuse is None else FuseConfig.from_dict(fuse),
        calib=CalibConfig() if calibration is None else CalibConfig.from_dict(calibration),
        evaluation=EvalConfig.from_dict(manifest.stage("evaluation")),
        calibration_method=(precision or {}).get("calibration_method") or DEFAULT_CALIBRATION_METHOD,
        gates={**GATES, gate_key(manifest.variant): Gate.from_dict(manifest.stage("gate"))},
        precision=recorded,
        invariance=invariance_from_manifest(manifest),
    )


def rebuild(bundle_path: Path, out_dir: Path, progress: Progress = print_progress) -> Path:
    """Build the bundle again into out_dir; a derived variant is rebuilt with its fp32 reference first."""
    manifest = read_bundle(bundle_path).manifest
    fp32 = _rebuild_fp32(manifest, out_dir, progress)
    engine_source = manifest.engine_source_variant
    onnx_variant = engine_source or manifest.variant
    if onnx_variant != "fp32":
        (outcome,) = build_variants(fp32, (onnx_variant,), variant_options_from_manifest(manifest), progress)
        _check_published(outcome)
    if engine_source is None:
        return fp32.path if onnx_variant == "fp32" else outcome.bundle
    # An engine bundle: its ONNX source first, then the engine with the recorded EngineConfig (on a GPU machine).
    from distilrt.export.engines.stage import build_engines

    (outcome,) = build_engines(fp32, (engine_source,), EngineConfig.from_dict(manifest.stage("engine")),
                               variant_options_from_manifest(manifest), progress=progress)
    _check_published(outcome)
    return outcome.bundle


def _check_published(outcome) -> None:
    if outcome.skipped:
        raise CapabilityError(f"{outcome.variant} cannot be rebuilt here: {outcome.reason}")
    if not outcome.published:
        raise VerificationError(f"the rebuilt {outcome.variant} was not published: {outcome.reason}")


def _rebuild_fp32(manifest: Manifest, out_dir: Path, progress: Progress) -> BuildResult:
    options = options_from_manifest(manifest, out_dir)
    source = manifest.source
    if source.stand_in is None:
        return build_fp32(source.id, options, progress)
    # A RANDOM-weight stand-in is made again from its recipe, under the same directory name.
    with tempfile.TemporaryDirectory(prefix="distilrt-rebuild-") as scratch:
        recipe = source.stand_in
        directory = make_random_checkpoint(recipe["checkpoint"], Path(scratch) / source.name, tiny=recipe["tiny"],
                                           seed=recipe["seed"], head_scale=recipe["head_scale"])
        return build_fp32(str(directory), options, progress)
