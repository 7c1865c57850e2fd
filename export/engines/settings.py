"""EngineConfig + a bundle's manifest → TensorRT builder settings, as plain data.

This is the seam between what distilrt decides about an engine and what TensorRT's builder is told. Every
decision is made here, without TensorRT, and tested exhaustively on CPU; export/engines/builder.py only applies the
settings to TensorRT's objects, one call per field. Flag and enum values are the member names of TensorRT's
own enums (``BuilderFlag``, ``HardwareCompatibilityLevel``, ``MemoryPoolType``), which the tests check against
the installed ``tensorrt_lean`` module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from distilrt.errors import UserInputError
from distilrt.export.config import ENGINE_SOURCES, EngineConfig, ShapeProfile
from distilrt.manifest import ONNX_FORMAT, Manifest
from distilrt.tokenization import MASK_POSITIONS

# Why each other variant cannot become an engine (the lint gives the node-level detail).
_NOT_ENGINE_SOURCES = {
    "fused": "its fused ops (Attention, SkipLayerNormalization, ...) are ONNX Runtime contrib ops (com.microsoft) "
             "that TensorRT's ONNX parser does not take",
    "int8-dynamic": "its per-token int8 products (MatMulIntegerToFloat) and MultiHeadAttention are ONNX Runtime "
                    "contrib ops (com.microsoft), and its codes are uint8",
    "int8-qdq": "its Q/DQ nodes are uint8 with nonzero zero points; TensorRT takes symmetric int8 Q/DQ "
                "(the int8-qdq-trt variant)",
}

_HARDWARE_LEVELS = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuilderSettings:
    source_variant: str
    precision: str  # what the ONNX carries: "fp32", "fp16" or "int8" (TensorRT keeps it: strongly typed)
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    cleared_builder_flags: tuple[str, ...]  # BuilderFlag members to clear (some are on by default)
    hardware_compatibility_level: str  # HardwareCompatibilityLevel member
    builder_optimization_level: int
    memory_pool_limits: Mapping[str, int]  # MemoryPoolType member -> bytes
    # One mapping per optimization profile: input name -> (min, opt, max) shapes.
    profiles: tuple[Mapping[str, tuple[Shape, Shape, Shape]], ...]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def builder_settings(config: EngineConfig, manifest: Mapping[str, Any]) -> BuilderSettings:
    """What TensorRT's builder must be told to build an engine of the bundle that ``manifest`` describes.

    Raises UserInputError, naming the fix, for a bundle that cannot become an engine or a profile it cannot
    serve."""
    manifest = Manifest(manifest)
    variant = manifest.variant
    if variant not in ENGINE_SOURCES:
        why = _NOT_ENGINE_SOURCES.get(variant, "it is not an ONNX variant distilrt builds engines from")
        raise UserInputError(f"a TensorRT engine cannot be built from the {variant} variant: {why}; build engines "
                             f"from {', '.join(ENGINE_SOURCES)}")
    if manifest.model_file.format != ONNX_FORMAT:
        raise UserInputError(f"the {variant} bundle's model is {manifest.model_file.format}, not ONNX; "
                             "engines are built from ONNX bundles")
    profiles = config.profiles or (ShapeProfile.from_dict(manifest.shape_profile),)
    max_positions = manifest.tokenizer_settings.model_max_length
    for index, profile in enumerate(profiles):
        if profile.max_sequence > max_positions:
            raise UserInputError(f"engine profile {index} asks for sequences up to {profile.max_sequence} but the "
                                 f"model has {max_positions} positions; lower max_sequence to {max_positions}")
    input_names = list(manifest.input_names)

    flags = []
    if config.version_compatible:
        flags.append("VERSION_COMPATIBLE")
    if config.exclude_lean_runtime:
        flags.append("EXCLUDE_LEAN_RUNTIME")
    if config.tf32:
        flags.append("TF32")
    return BuilderSettings(
        source_variant=variant,
        precision=ENGINE_SOURCES[variant],
        builder_flags=tuple(flags),
        # TensorRT turns TF32 on by default; fp32 parity needs it off unless asked for.
        cleared_builder_flags=() if config.tf32 else ("TF32",),
        hardware_compatibility_level=_HARDWARE_LEVELS[config.hardware_compatibility],
        builder_optimization_level=config.builder_optimization_level,
        memory_pool_limits={} if config.workspace_mb is None else {"WORKSPACE": config.workspace_mb * 2**20},
        profiles=tuple({name: input_shapes(name, profile) for name in input_names} for profile in profiles),
    )


def input_shapes(name: str, profile: ShapeProfile) -> tuple[Shape, Shape, Shape]:
    """TensorRT's (min, opt, max) shapes of one graph input: token inputs are [batch, sequence]; a fill-mask
    graph's mask_positions are [batch, masks], one mask (the common case) up to one per token."""
    if name == MASK_POSITIONS:
        return ((profile.min_batch, 1), (profile.opt_batch, 1), (profile.max_batch, profile.max_sequence))
    return ((profile.min_batch, profile.min_sequence), (profile.opt_batch, profile.opt_sequence),
            (profile.max_batch, profile.max_sequence))


def timing_cache_key(tensorrt_version: str, gpu_name: str, compute_capability: str) -> str:
    """A timing cache holds kernel timings measured with one TensorRT version on one GPU; one cache file per
    (version, GPU) keeps a cache from another machine from being offered to the builder."""
    identity = json.dumps([tensorrt_version, gpu_name, compute_capability])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]
