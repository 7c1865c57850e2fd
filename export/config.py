"""Frozen, validated configuration for each build stage. Every one is written into the bundle manifest, so a
bundle can be rebuilt from its manifest alone (``from_dict`` reads it back)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from distilrt.errors import UserInputError


class _StageConfig:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserInputError(f"{cls.__name__} has no settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: _tuples(v) for k, v in data.items()})


def _tuples(value):
    """JSON turns tuples into lists; frozen configs keep tuples so they stay hashable and comparable."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


@dataclass(frozen=True)
class ShapeProfile(_StageConfig):
    """Batch and sequence ranges the artifact is built and verified for (TensorRT optimization profiles)."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    min_sequence: int = 1
    opt_sequence: int = 128
    max_sequence: int = 512

    def __post_init__(self):
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserInputError(f"shape profile needs 1 <= min_batch <= opt_batch <= max_batch, got {self}")
        if not 1 <= self.min_sequence <= self.opt_sequence <= self.max_sequence:
            raise UserInputError(
                f"shape profile needs 1 <= min_sequence <= opt_sequence <= max_sequence, got {self}"
            )


@dataclass(frozen=True)
class ExportConfig(_StageConfig):
    opset: int = 17
    # None: chosen for the installed transformers so that ONNX Runtime can later fuse attention
    # (design.md: "sdpa" with transformers 4.57, "eager" with 5.x). The resolved value goes in the manifest.
    attn_implementation: str | None = None
    trace_batch: int = 2
    trace_sequence: int = 16

    def __post_init__(self):
        if self.opset < 17:
            raise UserInputError(f"opset must be 17 or newer (LayerNormalization), got {self.opset}")
        if self.attn_implementation not in (None, "eager", "sdpa"):
            raise UserInputError(
                f"attn_implementation must be 'eager', 'sdpa' or None (auto), got {self.attn_implementation!r}"
            )
        if self.trace_batch < 2 or self.trace_sequence < 2:
            # Tracing with a dimension of 1 lets the exporter specialise it away; dynamic axes need >= 2.
            raise UserInputError("trace_batch and trace_sequence must be at least 2 so the axes stay dynamic")


@dataclass(frozen=True)
class Tolerances(_StageConfig):
    """Per-output tolerances, Polygraphy style: the "" key is the default for outputs not named.

    An element passes when |actual - expected| <= atol + rtol * |expected|. The fp32 defaults: atol 1e-4, and
    rtol 1e-5 because float32 error grows with the magnitude of what is summed (large logits carry
    proportionally larger rounding error; 1e-5 is ~100 float32 epsilons).
    """

    atol: Mapping[str, float] = field(default_factory=lambda: {"": 1e-4})
    rtol: Mapping[str, float] = field(default_factory=lambda: {"": 1e-5})
    # Task level: scores of the runtime vs the transformers pipeline.
    score_atol: float = 1e-4

    def __post_init__(self):
        for name in ("atol", "rtol"):
            table = getattr(self, name)
            if "" not in table:
                raise UserInputError(f"Tolerances.{name} needs a default under the key \"\"")
            if any(v < 0 for v in table.values()):
                raise UserInputError(f"Tolerances.{name} values must be >= 0, got {dict(table)}")
        if self.score_atol < 0:
            raise UserInputError(f"Tolerances.score_atol must be >= 0, got {self.score_atol}")

    def for_output(self, output: str) -> tuple[float, float]:
        return self.atol.get(output, self.atol[""]), self.rtol.get(output, self.rtol[""])

    @classmethod
    def fp32(cls) -> "Tolerances":
        return cls()


@dataclass(frozen=True)
class VerifyConfig(_StageConfig):
    """The seeded inputs each stage is compared on."""

    seed: int = 0
    # (batch, sequence) pairs; rows get random lengths, so every batch above 1 carries padding.
    shapes: tuple[tuple[int, int], ...] = ((1, 8), (2, 33), (4, 128))
    # Inputs for the end-to-end check of the bundle against the transformers pipeline.
    task_samples: int = 24

    def __post_init__(self):
        if not self.shapes or any(b < 1 or s < 2 for b, s in self.shapes):
            raise UserInputError(f"verification shapes must be (batch >= 1, sequence >= 2) pairs, got {self.shapes}")
        if self.task_samples < 1:
            raise UserInputError(f"task_samples must be at least 1, got {self.task_samples}")
