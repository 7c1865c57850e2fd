"""Fusion: ONNX Runtime's transformer optimizer on the fp32 export, checked against the spec's fused-op counts."""

from __future__ import annotations

from pathlib import Path

from distilrt.errors import ExportError, VerificationError
from distilrt.export.config import FuseConfig
from distilrt.export.initializers import remove_duplicate_initializers
from distilrt.export.specs import ArchitectureSpec


def fuse(source: Path, target: Path, spec: ArchitectureSpec, model_config: dict, config: FuseConfig) -> dict[str, int]:
    """Write the fused graph to ``target``; return the fused-op counts, or raise if they miss the spec's."""
    from onnxruntime.transformers.optimizer import optimize_model

    layers, heads, hidden = spec.layers_heads_hidden(model_config)
    try:
        optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
                                   opt_level=config.opt_level, use_gpu=config.use_gpu)
    except Exception as e:
        raise ExportError(f"onnxruntime's transformer optimizer failed on {source}: {e}") from e
    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    check_fused_counts(counts, spec, layers)
    # ALBERT's fused Attention ops each pack a copy of the one shared Q/K/V set (docs/design.md#shared-weights).
    remove_duplicate_initializers(optimized.model)
    optimized.save_model_to_file(str(target))
    return counts


def check_fused_counts(counts: dict[str, int], spec: ArchitectureSpec, layers: int) -> None:
    expected = spec.fusion.expected_counts(layers)
    missing = {op: (counts.get(op, 0), n) for op, n in expected.items() if counts.get(op, 0) < n}
    if missing:
        detail = ", ".join(f"{op} {got}/{want}" for op, (got, want) in missing.items())
        raise VerificationError(
            f"{spec.model_type} graph did not fuse as its spec requires ({detail} fused); a transformers, torch or "
            f"onnxruntime change may have altered the exported attention pattern (see docs/design.md#fusion)",
            result={"fused_ops": counts, "expected_at_least": expected},
        )
