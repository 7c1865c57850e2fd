"""Variants derived from a verified fp32 bundle: fused, fp16, int8-dynamic, int8-qdq, int8-qdq-trt.

Each is made in ONNX on CPU, compared with the fp32 graph on the same seeded tensors, gated on the held-out
evaluation split against the fp32 variant's answers, and published only if it passes. A variant that fails is
reported with the margin it missed by and is not published.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import distilrt
from distilrt.backends import open_backend
from distilrt.calib.sets import CalibConfig, EvalConfig, calibration_set, mlm_evaluation_set, qa_evaluation_set
from distilrt.errors import DistilrtError, UserInputError, VerificationError
from distilrt.export import gates
from distilrt.export.build import BuildResult, Progress, finish_bundle, print_progress, verification_feeds
from distilrt.export.config import (CALIBRATION_METHODS, GATES, FuseConfig, Gate, PrecisionConfig, VerifyConfig,
                                    gate_key)
from distilrt.export.fuse import fuse
from distilrt.export.precision import convert, fp16_cpu_method, op_histogram, pad_to_common_length
from distilrt.export.publish import bundle_files, staging_dir, write_manifest
from distilrt.export.specs import ArchitectureSpec, get_spec
from distilrt.export.verify import verify_tensors

VARIANTS = ("fp32", "fused", "fp16", "int8-dynamic", "int8-qdq", "int8-qdq-trt")


@dataclass(frozen=True)
class VariantOptions:
    fuse: FuseConfig = field(default_factory=FuseConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    calibration_method: str = "Percentile"
    gates: dict = field(default_factory=lambda: dict(GATES))

    def __post_init__(self):
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UserInputError(f"calibration method {self.calibration_method!r} is unknown; "
                                 f"use one of {', '.join(CALIBRATION_METHODS)}")


@dataclass
class VariantOutcome:
    variant: str
    published: bool
    bundle: Path | None
    seconds: float
    model_mb: float | None = None
    gate: dict | None = None  # GateResult.to_dict()
    reason: str | None = None  # why it was not published
    calibration: dict | None = None  # identity of the calibration set (static int8), published or not
    skipped: bool = False  # not attempted: the machine lacks what it needs (TensorRT, a GPU); reason says which

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def parse_variants(text: str) -> tuple[str, ...]:
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserInputError(f"unknown variants {unknown or text!r}; choose from {', '.join(VARIANTS)}")
    return variants


def precision_config(variant: str, spec: ArchitectureSpec, method: str) -> PrecisionConfig:
    if variant == "fp16":
        return PrecisionConfig.fp16(spec.fp16_keep_fp32)
    if variant == "int8-dynamic":
        return PrecisionConfig.int8_dynamic(spec.int8.keep_float)
    make = PrecisionConfig.int8_qdq if variant == "int8-qdq" else PrecisionConfig.int8_qdq_trt
    return make(spec.int8.op_types, spec.int8.keep_float, method)


class Reference:
    """The fp32 variant and what every derived variant is compared with, computed once."""

    def __init__(self, fp32: BuildResult, options: VariantOptions, progress: Progress):
        self.bundle = fp32.bundle
        self.manifest = fp32.manifest
        self.spec = get_spec(fp32.manifest["architecture"])
        self.task = fp32.manifest["task"]
        self.model = open_backend("onnxruntime", fp32.bundle / "model.onnx")
        self.head = distilrt.head_for(distilrt.read_bundle(fp32.bundle), self.model)
        pad_token_id = fp32.manifest["tokenizer"]["settings"]["pad_token_id"]
        self.tensor_feeds = verification_feeds(self.spec, VerifyConfig.from_dict(fp32.manifest["stages"]["verify"]),
                                               fp32.manifest["model"]["vocab_size"], pad_token_id)
        progress(f"evaluation split: computing fp32 reference outputs ({self.task})")
        if self.task == "question-answering":
            self.eval_set = qa_evaluation_set(options.evaluation)
            self.eval_reference = gates.answer_questions(self.head, self.eval_set, progress)
        else:
            self.eval_set = mlm_evaluation_set(self.head, options.evaluation, self.model.input_names)
            self.eval_reference = gates.masked_logits(self.model.run, self.eval_set)

    def gate(self, bundle_dir: Path, model, gate: Gate, progress: Progress) -> gates.GateResult:
        """Gate the staged bundle, running on ``model``, its already opened backend."""
        if self.task == "question-answering":
            head = distilrt.head_for(distilrt.read_bundle(bundle_dir), model)
            answers = gates.answer_questions(head, self.eval_set, progress)
            return gates.qa_gate(self.eval_reference, answers, self.eval_set, gate)
        return gates.mlm_gate(self.eval_reference, gates.masked_logits(model.run, self.eval_set), self.eval_set, gate)

    def verify_and_publish(self, staging: Path, destination: Path, candidate, manifest: dict, gate: Gate,
                           report: dict, target_name: str, progress: Progress) -> gates.GateResult:
        """Compare the staged bundle's model (opened as ``candidate``) with fp32 on the seeded tensors, gate it on
        the evaluation split, and publish it to ``destination`` if it passes; VerificationError if not."""
        variant = manifest["variant"]
        progress(f"{variant}: comparing tensors with fp32")
        tensors = verify_tensors(self.model.run, candidate.run, self.tensor_feeds, tuple(self.model.output_names),
                                 gate.tensor, source_name="onnx fp32", target_name=target_name)
        write_manifest(staging, manifest, bundle_files(manifest))
        progress(f"{variant}: task gate on the evaluation split")
        result = self.gate(staging, candidate, gate, progress)
        if not result.passed:
            raise VerificationError(
                f"{variant} missed its gate: {result.metric} {result.value:.2f} < {result.threshold:.2f} "
                f"(by {-result.margin:.2f})", result=result.to_dict())
        summary = {"passed": True, "tensors": {"against": "onnx fp32", "gated": tensors.gated,
                                               "worst": tensors.worst()},
                   "gate": {k: v for k, v in result.to_dict().items() if k != "figures"},
                   "figures": result.figures}
        finish_bundle(staging, destination, manifest,
                      {"tensors": tensors.to_dict(), "gate": result.to_dict(), **report}, summary)
        return result


def build_variants(fp32: BuildResult, variants: tuple[str, ...], options: VariantOptions = VariantOptions(),
                   progress: Progress = print_progress) -> list[VariantOutcome]:
    """Build each requested variant from the fp32 bundle; never raises for a variant that fails its gate."""
    derived = [v for v in variants if v != "fp32"]
    if not derived:
        return []
    reference = Reference(fp32, options, progress)
    with tempfile.TemporaryDirectory(prefix="distilrt-variants-") as scratch:
        scratch = Path(scratch)
        fused_ops = _fuse_if_needed(reference, derived, options, scratch, progress)
        calibration = _calibrate_if_needed(reference, derived, options, progress)
        return [_build_one(reference, variant, options, scratch, fused_ops, calibration, progress)
                for variant in derived]


def _fuse_if_needed(reference: Reference, derived, options, scratch: Path, progress) -> dict | None:
    if not any(v in ("fused", "int8-dynamic") for v in derived):
        return None
    progress("fusing the fp32 graph (onnxruntime transformer optimizer)")
    return fuse(reference.bundle / "model.onnx", scratch / "fused.onnx", reference.spec,
                _model_shape_config(reference), options.fuse)


def _model_shape_config(reference: Reference) -> dict:
    """The config keys the spec reads for layers/heads/hidden, from the manifest (no checkpoint needed)."""
    model = reference.manifest["model"]
    keys = reference.spec.shape_keys
    return dict(zip(keys, (model["layers"], model["attention_heads"], model["hidden_size"])))


def _calibrate_if_needed(reference: Reference, derived, options, progress):
    if not any(v in ("int8-qdq", "int8-qdq-trt") for v in derived):
        return None
    progress(f"calibration set: {options.calib.size} inputs made with the runtime's preprocessing")
    return calibration_set(reference.head, options.calib, reference.model.input_names)


def _build_one(reference: Reference, variant: str, options: VariantOptions, scratch: Path, fused_ops,
               calibration, progress) -> VariantOutcome:
    started = time.perf_counter()
    destination = reference.bundle.parent / variant
    gate = options.gates[gate_key(variant)]
    calibration_identity = calibration.identity if calibration is not None and variant.startswith("int8-qdq") else None
    try:
        with staging_dir(destination) as staging:
            progress(f"{variant}: making the graph")
            precision = _make_graph(reference, variant, options, scratch, calibration, staging / "model.onnx")
            shutil.copy(reference.bundle / "tokenizer.json", staging / "tokenizer.json")
            candidate = open_backend("onnxruntime", staging / "model.onnx")
            manifest = _variant_manifest(reference, variant, options, precision, gate, fused_ops, calibration)
            report = {"ops": op_histogram(staging / "model.onnx")}
            if variant == "fp16":
                report["fp16_parity_method"] = fp16_cpu_method(staging / "model.onnx")
            result = reference.verify_and_publish(staging, destination, candidate, manifest, gate, report,
                                                  f"onnx {variant} (onnxruntime CPU)", progress)
        size = (destination / "model.onnx").stat().st_size / 2**20
        progress(f"{variant}: published ({result.metric} {result.value:.2f} >= {result.threshold:.2f})")
        return VariantOutcome(variant, True, destination, time.perf_counter() - started, size, result.to_dict(),
                              calibration=calibration_identity)
    except DistilrtError as e:
        progress(f"{variant}: NOT published: {e}")
        gate_result = e.result if isinstance(e, VerificationError) and isinstance(e.result, dict) else None
        return VariantOutcome(variant, False, None, time.perf_counter() - started, None, gate_result, str(e),
                              calibration=calibration_identity)


def _make_graph(reference: Reference, variant: str, options: VariantOptions, scratch: Path, calibration,
                target: Path) -> PrecisionConfig | None:
    if variant == "fused":
        shutil.copy(scratch / "fused.onnx", target)
        return None
    precision = precision_config(variant, reference.spec, options.calibration_method)
    source = scratch / "fused.onnx" if precision.source_graph == "fused" else reference.bundle / "model.onnx"
    feeds = None
    if precision.is_static_int8:
        feeds = pad_to_common_length(calibration.feeds, reference.manifest["tokenizer"]["settings"]["pad_token_id"])
    convert(precision, source, target, feeds)
    return precision


def _variant_manifest(reference: Reference, variant: str, options: VariantOptions, precision, gate: Gate,
                      fused_ops, calibration) -> dict:
    base = reference.manifest
    uses_fusion = variant == "fused" or (precision is not None and precision.source_graph == "fused")
    stages = {**base["stages"], "derived_from": {"variant": "fp32", "sha256": base["files"]["model.onnx"]},
              "gate": gate.to_dict(), "evaluation": options.evaluation.to_dict()}
    if uses_fusion:
        stages["fuse"] = options.fuse.to_dict()
    if precision is not None:
        stages["precision"] = precision.to_dict()
    if precision is not None and precision.is_static_int8:
        stages["calibration"] = options.calib.to_dict()
    manifest = {key: value for key, value in base.items() if key not in ("files", "verification")}
    manifest.update({
        "variant": variant,
        "model": {**base["model"], "precision": _precision_label(variant)},
        "stages": stages,
        "fused_ops": fused_ops if uses_fusion else None,
        "calibration": calibration.identity if precision is not None and precision.is_static_int8 else None,
    })
    return manifest


def _precision_label(variant: str) -> str:
    return {"fused": "fp32", "fp16": "fp16"}.get(variant, "int8")


def write_build_summary(fp32: BuildResult, outcomes: list[VariantOutcome]) -> Path:
    """build-summary.json beside the variant bundles: what was published, and what was not and why."""
    from distilrt.export.publish import write_json

    path = fp32.bundle.parent / "build-summary.json"
    fp32_size = (fp32.bundle / "model.onnx").stat().st_size / 2**20
    entries = {"fp32": {"variant": "fp32", "published": True, "bundle": str(fp32.bundle), "seconds": fp32.seconds,
                        "model_mb": fp32_size}}
    if path.is_file():  # a later `distilrt engine` run adds to what `distilrt build` recorded
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("fp32_sha256") == fp32.manifest["files"]["model.onnx"]:
            entries = {entry["variant"]: entry for entry in previous["variants"]}
    entries.update({o.variant: o.to_dict() for o in outcomes})
    write_json(path, {
        "checkpoint": fp32.manifest["source"]["id"],
        "task": fp32.manifest["task"],
        "fp32_sha256": fp32.manifest["files"]["model.onnx"],
        "variants": list(entries.values()),
    })
    return path
