"""Build one checkpoint end to end: the fp32 bundle, the requested variants, TensorRT engines where asked for,
and build-summary.json. The one sequence `distilrt build` and the CI artifact job (ci/) both run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distilrt.bundle import Bundle
from distilrt.export.build import BuildOptions, BuildResult, build_fp32
from distilrt.export.build_log import build_log, build_log_path
from distilrt.export.config import ENGINE_SOURCES, EngineConfig
from distilrt.export.derived_bundles import VariantOptions, VariantOutcome
from distilrt.export.variants import build_variants
from distilrt.files import write_json
from distilrt.progress import Progress, print_progress

SUMMARY_FILE = "build-summary.json"


@dataclass(frozen=True)
class EngineRequest:
    """Build TensorRT engines from the GPU-bound variants, with these settings, on this machine."""

    config: EngineConfig = field(default_factory=EngineConfig)
    timing_cache_dir: Path | None = None
    device: int = 0


@dataclass(frozen=True)
class CheckpointBuild:
    fp32: BuildResult
    variants: list[VariantOutcome]
    engines: list[VariantOutcome]
    summary: Path

    @property
    def outcomes(self) -> list[VariantOutcome]:
        return self.variants + self.engines

    @property
    def published(self) -> dict[str, Path]:
        """Every published bundle by variant, fp32 first."""
        return {"fp32": self.fp32.path, **{o.variant: o.bundle for o in self.outcomes if o.published}}


def build_checkpoint(checkpoint: str, variants: tuple[str, ...], options: BuildOptions = BuildOptions(),
                     variant_options: VariantOptions = VariantOptions(), engines: EngineRequest | None = None,
                     progress: Progress = print_progress) -> CheckpointBuild:
    """fp32 → variants → engines (if ``engines``) → build-summary.json. Raises only if fp32 cannot be built; a
    variant or engine that fails is recorded in the summary with the reason. Library output goes to
    artifacts/<checkpoint>/build.log (distilrt.export.build_log)."""
    with build_log(build_log_path(options.out_dir, checkpoint), progress) as progress:
        fp32 = build_fp32(checkpoint, options, progress)
        outcomes = build_variants(fp32, variants, variant_options, progress)
        engine_outcomes = []
        if engines is not None:
            from distilrt.export.engines.stage import build_engines

            sources = tuple(v for v in variants if v in ENGINE_SOURCES)
            engine_outcomes = build_engines(fp32, sources, engines.config, variant_options,
                                            timing_cache_dir=engines.timing_cache_dir, device=engines.device,
                                            progress=progress)
        summary = write_build_summary(fp32, outcomes + engine_outcomes)
    return CheckpointBuild(fp32, outcomes, engine_outcomes, summary)


def write_build_summary(fp32: Bundle, outcomes: list[VariantOutcome]) -> Path:
    """build-summary.json beside the variant bundles: what was published, and what was not and why."""
    path = fp32.path.parent / SUMMARY_FILE
    fp32_sha256 = fp32.manifest.onnx_sha256
    fp32_size = fp32.onnx_path.stat().st_size / 2**20
    entries = {"fp32": {"variant": "fp32", "published": True, "bundle": str(fp32.path),
                        "seconds": getattr(fp32, "seconds", 0.0), "model_mb": fp32_size}}
    if path.is_file():  # a later `distilrt engine` run adds to what `distilrt build` recorded
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("fp32_sha256") == fp32_sha256:
            entries = {entry["variant"]: entry for entry in previous["variants"]}
    entries.update({o.variant: o.to_dict() for o in outcomes})
    write_json(path, {
        "checkpoint": fp32.manifest.source.id,
        "task": fp32.task,
        "fp32_sha256": fp32_sha256,
        "variants": list(entries.values()),
    })
    return path
