"""Frozen, validated configuration for each build stage. Every one is written into the bundle manifest, so a
bundle can be rebuilt from its manifest alone (``from_dict`` reads it back)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from distilrt.config import StageConfig, check_int
from distilrt.errors import UserInputError


@dataclass(frozen=True)
class ShapeProfile(StageConfig):
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
class ExportConfig(StageConfig):
    opset: int = 17
    # None: chosen for the installed transformers so that ONNX Runtime can later fuse attention ("sdpa" with
    # transformers 4.57, "eager" with 5.x: docs/design.md#export-and-attention-implementation). The resolved value
    # goes in the manifest.
    attn_implementation: str | None = None
    trace_batch: int = 2
    trace_sequence: int = 16
    # Stated, not left to library defaults that moved: torch 2.14 made the dynamo exporter the default and
    # transformers 5 loads the dtype a checkpoint was saved in. Each has one supported value.
    exporter: str = "torchscript"  # torch.onnx.export(dynamo=False): the only graphs that fuse
    dtype: str = "float32"  # the fp32 bundle every variant is measured against

    def __post_init__(self):
        if self.opset < 17:
            raise UserInputError(f"opset must be 17 or newer (LayerNormalization), got {self.opset}")
        if self.attn_implementation not in (None, "eager", "sdpa"):
            raise UserInputError(
                f"attn_implementation must be 'eager', 'sdpa' or None (auto), got {self.attn_implementation!r}"
            )
        if self.exporter != "torchscript":
            raise UserInputError(f"exporter must be 'torchscript' (dynamo graphs do not fuse), got {self.exporter!r}")
        if self.dtype != "float32":
            raise UserInputError(f"dtype must be 'float32' (variants are derived from the fp32 bundle), got {self.dtype!r}")
        if self.trace_batch < 2 or self.trace_sequence < 2:
            # Tracing with a dimension of 1 lets the exporter specialise it away; dynamic axes need >= 2.
            raise UserInputError("trace_batch and trace_sequence must be at least 2 so the axes stay dynamic")


@dataclass(frozen=True)
class Tolerances(StageConfig):
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
    def fp32(cls) -> Tolerances:
        return cls()


@dataclass(frozen=True)
class VerifyConfig(StageConfig):
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


@dataclass(frozen=True)
class FuseConfig(StageConfig):
    """ONNX Runtime transformer optimizer settings (model_type "bert" covers all four architectures)."""

    opt_level: int = 1  # ORT's basic, provider-independent graph optimizations before the fusions
    use_gpu: bool = False

    def __post_init__(self):
        if self.opt_level not in (0, 1):
            # Levels 2 and 99 bake provider-specific ops into the file; the bundle must stay portable.
            raise UserInputError(f"FuseConfig.opt_level must be 0 or 1, got {self.opt_level}")


CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile")
DEFAULT_CALIBRATION_METHOD = "Percentile"
# int8-dynamic's activation scales: one per token (row), or ONNX Runtime's one per tensor (batch dependent).
ACTIVATION_SCALES = ("token", "tensor")
PRECISION_VARIANTS = ("fp16", "int8-dynamic", "int8-qdq", "int8-qdq-trt")
# Every ONNX variant `distilrt build --variants` makes, in build order (fp32 first: the others derive from it).
VARIANTS = ("fp32", "fused", *PRECISION_VARIANTS)


@dataclass(frozen=True)
class PrecisionConfig(StageConfig):
    """How one reduced-precision variant is made. Use the named constructors; each is written to the manifest."""

    variant: str
    source_graph: str  # "fp32" (unfused export) or "fused"
    op_types: tuple[str, ...] = ()  # int8: ops whose inputs are quantized
    keep_float: tuple[str, ...] = ()  # int8: substrings of node names kept in float (the spec's recipe)
    # int8: exact names of linear layers also kept in float, chosen by the accuracy search (--int8-search) from
    # their measured sensitivity; recorded so that a rebuild makes the same graph without searching again.
    float_nodes: tuple[str, ...] = ()
    keep_fp32: tuple[str, ...] = ()  # fp16: op types kept in float32
    calibration_method: str | None = None  # static int8 only
    percentile: float | None = None  # Percentile calibration only
    per_channel: bool = False
    activation_type: str | None = None  # "uint8" | "int8"
    symmetric: bool = False  # zero point 0 for activations and weights (what TensorRT requires)
    # int8-dynamic: "uint8" weights. ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512F)
    # add pairs of products in int16 with saturation, which cost tiny stand-ins 9-15 points of top-1 agreement
    # on an AVX2 machine; u8 x u8 kernels widen to int16 first and cannot saturate, so the gate measured on one
    # CPU holds on every other (docs/design.md#quantization). Older manifests lack it: "int8".
    weight_type: str = "int8"
    # int8-dynamic: "token" scales each activation row (token) on its own, so an answer does not depend on its
    # batch-mates; "tensor" is ONNX Runtime's one scale over the whole padded batch (export/per_token_int8.py,
    # docs/design.md#batch-invariance). Older manifests lack it: "tensor".
    activation_scales: str = "tensor"

    def __post_init__(self):
        if self.variant not in PRECISION_VARIANTS:
            raise UserInputError(f"unknown precision variant {self.variant!r}; known: {', '.join(PRECISION_VARIANTS)}")
        if self.source_graph not in ("fp32", "fused"):
            raise UserInputError(f"source_graph must be 'fp32' or 'fused', got {self.source_graph!r}")
        if self.calibration_method is not None and self.calibration_method not in CALIBRATION_METHODS:
            raise UserInputError(
                f"calibration method {self.calibration_method!r} is unknown; use one of {', '.join(CALIBRATION_METHODS)}"
            )
        if self.weight_type not in ("int8", "uint8") or (self.is_static_int8 and self.weight_type != "int8"):
            raise UserInputError(f"weight_type must be 'int8' or, for int8-dynamic, 'uint8'; got {self.weight_type!r}")
        if self.activation_scales not in ACTIVATION_SCALES or (
                self.activation_scales == "token" and self.variant != "int8-dynamic"):
            raise UserInputError(f"activation_scales must be one of {', '.join(ACTIVATION_SCALES)}, and 'token' is "
                                 f"for int8-dynamic only; got {self.activation_scales!r} for {self.variant}")
        if self.percentile is not None and not 90.0 <= self.percentile < 100.0:
            raise UserInputError(f"percentile must be in [90, 100), got {self.percentile}")

    @property
    def is_static_int8(self) -> bool:
        return self.calibration_method is not None

    @classmethod
    def fp16(cls, keep_fp32: tuple[str, ...]) -> PrecisionConfig:
        # From the unfused graph: fused com.microsoft ops are ONNX Runtime-only and TensorRT could not parse them.
        return cls("fp16", "fp32", keep_fp32=tuple(keep_fp32))

    def with_float_nodes(self, nodes) -> PrecisionConfig:
        """The same recipe with these linear layers left in float as well."""
        return replace(self, float_nodes=tuple(nodes))

    @classmethod
    def int8_dynamic(cls, keep_float: tuple[str, ...] = (), activation_scales: str = "token") -> PrecisionConfig:
        # From the fused graph: gives QAttention + MatMulInteger, the fast CPU path (docs/design.md#quantization);
        # per-token scales then replace QAttention with MatMulInteger + fused MultiHeadAttention.
        # Per-channel weights: on a real encoder (fine-tuned MiniLM, 2,000 held-out questions) per-tensor weights
        # kept 93.5% of fp32's gold F1 and per-channel 98.8% (docs/design.md#quantization).
        return cls("int8-dynamic", "fused", op_types=("MatMul", "Attention"), keep_float=tuple(keep_float),
                   per_channel=True, weight_type="uint8", activation_scales=activation_scales)

    @classmethod
    def int8_qdq(cls, op_types: tuple[str, ...], keep_float: tuple[str, ...] = (),
                 method: str = DEFAULT_CALIBRATION_METHOD) -> PrecisionConfig:
        # U8S8 for ORT CPU.
        return cls._static_int8("int8-qdq", op_types, keep_float, method, activation_type="uint8", symmetric=False)

    @classmethod
    def int8_qdq_trt(cls, op_types: tuple[str, ...], keep_float: tuple[str, ...] = (),
                     method: str = DEFAULT_CALIBRATION_METHOD) -> PrecisionConfig:
        # TensorRT 11 takes explicit Q/DQ only: int8, symmetric (zero point 0), per-channel weights.
        return cls._static_int8("int8-qdq-trt", op_types, keep_float, method, activation_type="int8", symmetric=True)

    @classmethod
    def _static_int8(cls, variant: str, op_types, keep_float, method: str, *, activation_type: str,
                     symmetric: bool) -> PrecisionConfig:
        # Static Q/DQ of the unfused graph: on fused graphs it fails or quantizes partly (docs/design.md#quantization).
        return cls(variant, "fp32", op_types=tuple(op_types), keep_float=tuple(keep_float),
                   calibration_method=method, percentile=99.999 if method == "Percentile" else None,
                   per_channel=True, activation_type=activation_type, symmetric=symmetric)


@dataclass(frozen=True)
class InvarianceConfig(StageConfig):
    """The batch-invariance check every derived bundle passes before it is published (export/invariance.py):
    its evaluation split alone vs in mixed-length batches."""

    items: int | None = None  # questions or sentences of the evaluation split; None: all of the gate's split
    # The fp32 bundle, checked when it is built (before any gate split): questions, or masked positions.
    fp32_items: int = 100
    batch_size: int = 8
    score_atol: float = 1e-5  # QA answer scores, fill-mask top-k probabilities
    # A variant that answers differently in a batch is not published, unless this is off (`--allow-batch-variant`):
    # then it is published with its failed check recorded, and `distilrt serve` warns for it.
    required: bool = True

    def __post_init__(self):
        if self.items is not None:
            check_int("items", self.items, minimum=1)
        check_int("batch_size", self.batch_size, minimum=2)
        check_int("fp32_items", self.fp32_items, minimum=1)
        if not 0 <= self.score_atol < 1:
            raise UserInputError(f"InvarianceConfig.score_atol must be in [0, 1), got {self.score_atol}")


@dataclass(frozen=True)
class Gate(StageConfig):
    """What a variant must reach against the fp32 variant, on the held-out evaluation split, to be published.

    Accuracy on labelled data decides (docs/design.md#accuracy-gates): the variant's accuracy on the labels
    (question answering: SQuAD F1 against the gold answers; fill-mask: top-1 accuracy against the original
    tokens) must keep ``relative_accuracy`` of the fp32 variant's, MLPerf Inference's acceptance rule (99% of
    the fp32 score), judged on the paired one-sided ``confidence`` lower bound so that a few hundred items of
    noise cannot pass a variant that loses more. Where fp32 itself scores below ``min_fp32_accuracy`` on the
    labels (RANDOM-weight stand-ins), the labels cannot tell a good variant from a bad one, and agreement with
    fp32 decides instead: ``qa_f1_vs_fp32`` / ``mlm_top1_vs_fp32``. Agreement is reported under either rule.

    ``tensor`` is None where a tensor tolerance says nothing useful (int8 changes logits by design) and the
    task-level gates decide; its statistics are still reported.
    """

    tensor: Tolerances | None
    qa_f1_vs_fp32: float  # agreement rule: F1 (0-100) of the variant's answers scored against the fp32 answers
    mlm_top1_vs_fp32: float  # agreement rule: % of masked positions with the same top-1 token as fp32
    relative_accuracy: float = 0.99  # labels rule: share of fp32's accuracy on the labels the variant must keep
    confidence: float = 0.95  # of the one-sided paired lower bound that must reach relative_accuracy
    min_fp32_accuracy: float = 20.0  # % (QA F1, fill-mask top-1) below which fp32 has no skill to compare with

    def __post_init__(self):
        if not 0 < self.relative_accuracy <= 1:
            raise UserInputError(f"Gate.relative_accuracy must be in (0, 1], got {self.relative_accuracy}")
        if not 0.5 <= self.confidence < 1:
            raise UserInputError(f"Gate.confidence must be in [0.5, 1), got {self.confidence}")

    def to_dict(self):
        return {**asdict(self), "tensor": None if self.tensor is None else self.tensor.to_dict()}

    @classmethod
    def from_dict(cls, data):
        """Also reads the gates of bundles built before the labels rule (agreement thresholds only)."""
        tensor = None if data["tensor"] is None else Tolerances.from_dict(data["tensor"])
        return cls(tensor, **{k: v for k, v in data.items() if k != "tensor"})


# The tolerances and gates of every precision, in one place (issue: "default gates").
GATES: dict[str, Gate] = {
    "fused": Gate(Tolerances(atol={"": 1e-3}, rtol={"": 1e-4}), qa_f1_vs_fp32=99.5, mlm_top1_vs_fp32=99.5),
    "fp16": Gate(Tolerances(atol={"": 5e-2}, rtol={"": 1e-2}), qa_f1_vs_fp32=99.5, mlm_top1_vs_fp32=99.5),
    "int8": Gate(None, qa_f1_vs_fp32=97.0, mlm_top1_vs_fp32=95.0),
    # An fp32 TensorRT engine (TF32 off) sums in other orders than ONNX Runtime's CPU kernels: the fused tolerance.
    "fp32-engine": Gate(Tolerances(atol={"": 1e-3}, rtol={"": 1e-4}), qa_f1_vs_fp32=99.5, mlm_top1_vs_fp32=99.5),
}


def gate_key(variant: str) -> str:
    """The GATES entry of a variant: engines are gated like the ONNX they were built from (fp32 excepted)."""
    if variant == "fp32-engine":
        return variant
    source = variant.removesuffix("-engine")
    return "int8" if source.startswith("int8") else source


def gate_for(variant: str) -> Gate:
    return GATES[gate_key(variant)]


# The ONNX variants TensorRT's parser takes, and the precision their engine keeps (TensorRT 11 builds strongly
# typed networks only: the precision is the ONNX's own). fused and int8-dynamic hold ONNX Runtime-only ops and
# int8-qdq holds uint8 Q/DQ, which TensorRT does not take (see `distilrt lint`).
ENGINE_SOURCES = {"fp32": "fp32", "fp16": "fp16", "int8-qdq-trt": "int8"}
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")


def engine_variant(source_variant: str) -> str:
    return f"{source_variant}-engine"


@dataclass(frozen=True)
class EngineConfig(StageConfig):
    """How a TensorRT engine is built from a bundle's ONNX. Machine-local things (where the timing cache lives)
    are arguments of the build, not settings: the manifest records what the engine is, not where it was made."""

    # Optimization profiles; () means one profile: the bundle's own shape profile.
    profiles: tuple[ShapeProfile, ...] = ()
    # Engines that later TensorRT versions (of the same major version) can run, with the lean runtime.
    version_compatible: bool = False
    # Leave the lean runtime out of a version-compatible plan (smaller plan; the machine that runs it must
    # have the lean runtime, e.g. the tensorrt_lean module).
    exclude_lean_runtime: bool = False
    # Which GPUs the engine may run on: "none" (the compute capability it was built on), "ampere_plus"
    # (compute capability 8.0 and newer) or "same_compute_capability".
    hardware_compatibility: str = "none"
    builder_optimization_level: int = 3  # TensorRT's default; 0-5, higher searches longer for faster kernels
    workspace_mb: int | None = None  # None: TensorRT's default (the GPU's memory)
    # TF32 matmuls in fp32 engines: faster, but ~1e-3 relative error; off so fp32 engines keep fp32 parity.
    tf32: bool = False

    def __post_init__(self):
        if self.exclude_lean_runtime and not self.version_compatible:
            raise UserInputError("exclude_lean_runtime applies to version-compatible engines only; "
                                 "set version_compatible as well, or drop exclude_lean_runtime")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise UserInputError(f"hardware_compatibility must be one of {', '.join(HARDWARE_COMPATIBILITY)}, "
                                 f"got {self.hardware_compatibility!r}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise UserInputError(f"builder_optimization_level must be 0-5, got {self.builder_optimization_level}")
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise UserInputError(f"workspace_mb must be at least 1, got {self.workspace_mb}")
        if not all(isinstance(p, ShapeProfile) for p in self.profiles):
            raise UserInputError("EngineConfig.profiles must be ShapeProfile values")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineConfig:
        data = dict(data)
        data["profiles"] = tuple(ShapeProfile.from_dict(p) for p in data.get("profiles", ()))
        return super().from_dict.__func__(cls, data)
