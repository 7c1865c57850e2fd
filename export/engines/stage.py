"""The engine stage: a TensorRT engine bundle from each GPU-bound ONNX bundle (fp32, fp16, int8-qdq-trt).

Per source bundle, on any machine: the builder settings (plain data) and the TensorRT readiness lint. Then,
where full TensorRT and a GPU are present: the engine build, the same tensor and task verification as every
other variant (the engine against the fp32 ONNX on the seeded tensors, then the evaluation gate), and
publication as artifacts/<checkpoint>/<source>-engine/. An engine bundle keeps the ONNX it was built from, so a
machine that cannot run the engine can run that instead (``distilrt.load(..., fallback="onnx")``).

Where TensorRT or a GPU is missing, every engine is reported as not built with the reason (in
build-summary.json) and nothing is written: never a placeholder engine.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from distilrt.bundle import Bundle, read_bundle
from distilrt.errors import BatchVarianceError, CapabilityError, DistilrtError, ExportError, VerificationError
from distilrt.export.config import EngineConfig, ShapeProfile, engine_variant, gate_key
from distilrt.export.derived_bundles import Reference, VariantOptions, VariantOutcome
from distilrt.export.engines.builder import DEFAULT_TIMING_CACHE_DIR, BuildMachine, build_machine, build_plan
from distilrt.export.engines.lint import LintReport, lint_bundle
from distilrt.export.engines.settings import BuilderSettings, builder_settings, timing_cache_key
from distilrt.files import staging_dir
from distilrt.manifest import ENGINE_FORMAT, Manifest
from distilrt.progress import Progress, print_progress

ENGINE_FILE = "model.plan"


@dataclass(frozen=True)
class _Planned:
    source: Bundle
    settings: BuilderSettings
    lint: LintReport


def build_engines(fp32: Bundle, sources: tuple[str, ...], config: EngineConfig = EngineConfig(),
                  options: VariantOptions = VariantOptions(), *,
                  timing_cache_dir: Path | None = DEFAULT_TIMING_CACHE_DIR, device: int = 0,
                  progress: Progress = print_progress) -> list[VariantOutcome]:
    """An engine from each published source variant beside ``fp32``; never raises for one that cannot be built."""
    outcomes, planned = [], []
    for source in sources:
        result = _plan(fp32.path.parent / source, source, config, progress)
        (planned if isinstance(result, _Planned) else outcomes).append(result)
    if not planned:
        return outcomes
    try:
        machine = build_machine(device)
    except CapabilityError as e:
        progress(f"engines not built: {e}")
        return outcomes + [VariantOutcome(engine_variant(p.source.variant), False, None, 0.0,
                                          reason=f"not built: {e}", skipped=True) for p in planned]
    reference = Reference(fp32, options, progress)
    return outcomes + [_build_one(reference, p, config, machine, options, timing_cache_dir, device, progress)
                       for p in planned]


def _plan(source: Path, source_variant: str, config: EngineConfig, progress: Progress):
    """Settings and lint of one source bundle: a _Planned, or the VariantOutcome saying why it cannot be built."""
    variant = engine_variant(source_variant)
    try:
        bundle = read_bundle(source)
        settings = builder_settings(config, bundle.manifest)
        lint = lint_bundle(source)
    except DistilrtError as e:
        progress(f"{variant}: NOT built: {e}")
        return VariantOutcome(variant, False, None, 0.0, reason=str(e))
    if not lint:
        progress(f"{variant}: NOT built: the ONNX is not ready for TensorRT:\n{lint.summary()}")
        return VariantOutcome(variant, False, None, 0.0,
                              reason=f"`distilrt lint` rejected {source}: {lint.summary()}")
    progress(f"{variant}: {source} is ready for TensorRT (lint clean)")
    return _Planned(bundle, settings, lint)


def _build_one(reference: Reference, planned: _Planned, config: EngineConfig, machine: BuildMachine,
               options: VariantOptions, timing_cache_dir: Path | None, device: int,
               progress: Progress) -> VariantOutcome:
    from distilrt.backends.tensorrt import open_model

    started = time.perf_counter()
    variant = engine_variant(planned.source.variant)
    destination = planned.source.path.parent / variant
    onnx_path = planned.source.onnx_path
    gate = options.gates[gate_key(variant)]
    timing_cache = None if timing_cache_dir is None else machine.timing_cache_path(timing_cache_dir)
    try:
        with staging_dir(destination) as staging:
            progress(f"{variant}: building with TensorRT {machine.version} on {machine.gpu['name']}")
            try:
                plan, build_info = build_plan(machine, onnx_path, planned.settings, timing_cache)
            except ExportError as e:
                raise ExportError(f"{e}; {reduce_hint(onnx_path, planned.settings)}") from e
            (staging / ENGINE_FILE).write_bytes(plan)
            for name in (planned.source.manifest.onnx_file, planned.source.manifest.tokenizer_file):
                shutil.copy(planned.source.path / name, staging / name)
            manifest = _engine_manifest(planned, config, machine, build_info, gate)
            engine = open_model(staging / ENGINE_FILE, module="tensorrt", device=device,
                                engine_host_code_allowed=config.version_compatible)
            try:
                result = reference.verify_and_publish(
                    staging, destination, engine, manifest, gate, {"lint": planned.lint.to_dict()},
                    f"tensorrt {variant} ({machine.gpu['name']})", progress)
            except BatchVarianceError:
                raise  # the precision hint is about accuracy, not batch variance
            except VerificationError as e:
                raise VerificationError(f"{e}; {reduce_hint(onnx_path, planned.settings)}",
                                        result=e.result) from e
            finally:
                engine.close()
        size = (destination / ENGINE_FILE).stat().st_size / 2**20
        progress(f"{variant}: published ({result.describe()})")
        return VariantOutcome(variant, True, destination, time.perf_counter() - started, size, result.gate.to_dict(),
                              invariance=result.invariance.to_dict())
    except DistilrtError as e:
        progress(f"{variant}: NOT published: {e}")
        return VariantOutcome.failed(variant, e, time.perf_counter() - started)


def _engine_manifest(planned: _Planned, config: EngineConfig, machine: BuildMachine, build_info: dict,
                     gate) -> dict:
    source: Manifest = planned.source.manifest
    gpu = machine.gpu
    onnx = source.model_file
    return source.derive(
        engine_variant(source.variant),
        model={"file": ENGINE_FILE, "format": ENGINE_FORMAT, "backend": "tensorrt",
               "precision": planned.settings.precision},
        stages={"engine": config.to_dict(), "gate": gate.to_dict(),
                "engine_source": {"variant": source.variant, "sha256": source.onnx_sha256}},
        # The ONNX the engine was built from: for `distilrt lint`, and for machines that cannot run the engine.
        fallback={"file": onnx.file, "format": onnx.format, "backend": onnx.backend},
        engine={
            "tensorrt_version": machine.version,
            "built_with": "tensorrt",
            "gpu": gpu,
            "version_compatible": config.version_compatible,
            "exclude_lean_runtime": config.exclude_lean_runtime,
            "hardware_compatibility": config.hardware_compatibility,
            "profiles": [p.to_dict() for p in config.profiles]
                        or [ShapeProfile.from_dict(source.shape_profile).to_dict()],
            "builder_settings": planned.settings.to_dict(),
            "timing_cache": {"key": timing_cache_key(machine.version, gpu["name"], gpu["compute_capability"]),
                             "reused": build_info["timing_cache_reused"]},
            "lint": {"passed": True, "checked": planned.lint.checked},
        },
        tools={**source.tools, "tensorrt": machine.version, "gpu": gpu["name"],
               "compute_capability": gpu["compute_capability"]},
    )


def reduce_hint(onnx_path: Path, settings: BuilderSettings) -> str:
    """The Polygraphy commands that bisect the ONNX down to the nodes TensorRT fails on or disagrees with ONNX
    Runtime about (Polygraphy needs full TensorRT, so they run where the build ran)."""
    return "to find the failing nodes run: " + " && ".join(" ".join(c) for c in reduce_commands(onnx_path, settings))


def reduce_commands(onnx_path: Path, settings: BuilderSettings) -> list[list[str]]:
    """Polygraphy's recipe (tools/Polygraphy/examples/cli/debug/02_reducing_failing_onnx_models): freeze the
    input shapes (the profile's opt shapes) and fold constants, then bisect with `debug reduce`, each step
    checked by comparing TensorRT with ONNX Runtime."""
    opt_shapes = [f"{name}:{list(shapes[1])}".replace(" ", "") for name, shapes in settings.profiles[0].items()]
    return [["polygraphy", "surgeon", "sanitize", str(onnx_path), "-o", "folded.onnx", "--fold-constants",
             "--override-input-shapes", *opt_shapes],
            ["polygraphy", "debug", "reduce", "folded.onnx", "-o", "reduced.onnx", "--mode=bisect",
             "--check", "polygraphy", "run", "polygraphy_debug.onnx", "--trt", "--onnxrt"]]
