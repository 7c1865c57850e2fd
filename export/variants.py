"""Variants derived from a verified fp32 bundle: fused, fp16, int8-dynamic, int8-qdq, int8-qdq-trt.

Each is made in ONNX on CPU, then goes through the derived-bundle stage (``derived_bundles``): compared with
the fp32 graph on the same seeded tensors, gated on the held-out evaluation split against the fp32 variant's
answers, and published only if it passes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from distilrt.backends import open_backend
from distilrt.bundle import Bundle
from distilrt.calib.sets import CalibConfig, calibration_set
from distilrt.errors import DistilrtError, UserInputError
from distilrt.export.config import VARIANTS, Gate, PrecisionConfig, gate_key
from distilrt.export.derived_bundles import Reference, VariantOptions, VariantOutcome
from distilrt.export.fuse import fuse
from distilrt.export.int8_search import SearchResult, search_int8
from distilrt.export.precision import convert, fp16_cpu_method, op_histogram, pad_to_common_length, weighted_nodes_of
from distilrt.export.specs import ArchitectureSpec
from distilrt.files import staging_dir
from distilrt.progress import Progress, print_progress

# The ONNX file every variant bundle holds.
MODEL_FILE = "model.onnx"


def parse_variants(text: str) -> tuple[str, ...]:
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UserInputError(f"unknown variants {unknown or text!r}; choose from {', '.join(VARIANTS)}")
    return variants


def precision_config(variant: str, spec: ArchitectureSpec, method: str,
                     activation_scales: str = "token") -> PrecisionConfig:
    if variant == "fp16":
        return PrecisionConfig.fp16(spec.fp16_keep_fp32)
    if variant == "int8-dynamic":
        return PrecisionConfig.int8_dynamic(spec.int8.keep_float, activation_scales)
    make = PrecisionConfig.int8_qdq if variant == "int8-qdq" else PrecisionConfig.int8_qdq_trt
    return make(spec.int8.op_types, spec.int8.keep_float, method)


def build_variants(fp32: Bundle, variants: tuple[str, ...], options: VariantOptions = VariantOptions(),
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
    # The config keys the spec reads for layers/heads/hidden, from the manifest (no checkpoint needed).
    shape_config = dict(zip(reference.spec.shape_keys, reference.manifest.layers_heads_hidden))
    return fuse(reference.bundle.onnx_path, scratch / "fused.onnx", reference.spec, shape_config, options.fuse)


def _calibrate_if_needed(reference: Reference, derived, options, progress):
    if not any(v in ("int8-qdq", "int8-qdq-trt") for v in derived):
        return None
    progress(f"calibration set: {options.calib.size} inputs made with the runtime's preprocessing")
    return calibration_set(reference.head, options.calib, reference.model.input_names)


def _build_one(reference: Reference, variant: str, options: VariantOptions, scratch: Path, fused_ops,
               calibration, progress) -> VariantOutcome:
    started = time.perf_counter()
    destination = reference.bundle.path.parent / variant
    gate = options.gates[gate_key(variant)]
    calibration_identity = calibration.identity if calibration is not None and variant.startswith("int8-qdq") else None
    try:
        with staging_dir(destination) as staging:
            progress(f"{variant}: making the graph")
            precision, search = _make_graph(reference, variant, options, scratch, calibration, staging / MODEL_FILE,
                                            gate, progress)
            shutil.copy(reference.bundle.tokenizer_path, staging / reference.manifest.tokenizer_file)
            candidate = open_backend("onnxruntime", staging / MODEL_FILE)
            manifest = _variant_manifest(reference, variant, options, precision, gate, fused_ops, calibration,
                                         search)
            report = {"ops": op_histogram(staging / MODEL_FILE), "int8_search": search and search.record}
            if variant == "fp16":
                report["fp16_parity_method"] = fp16_cpu_method(staging / MODEL_FILE)
            result = reference.verify_and_publish(staging, destination, candidate, manifest, gate, report,
                                                  f"onnx {variant} (onnxruntime CPU)", progress)
        size = (destination / MODEL_FILE).stat().st_size / 2**20
        progress(f"{variant}: published ({result.describe()})")
        return VariantOutcome(variant, True, destination, time.perf_counter() - started, size, result.gate.to_dict(),
                              calibration=calibration_identity, float_layers=_float_layers(destination, precision),
                              invariance=result.invariance.to_dict())
    except DistilrtError as e:
        progress(f"{variant}: NOT published: {e}")
        return VariantOutcome.failed(variant, e, time.perf_counter() - started, calibration=calibration_identity)


def _make_graph(reference: Reference, variant: str, options: VariantOptions, scratch: Path, calibration,
                target: Path, gate: Gate, progress: Progress) -> tuple[PrecisionConfig | None, SearchResult | None]:
    """The variant's graph at ``target``, its precision config and, for an accuracy-searched int8 recipe, the
    search that chose it."""
    if variant == "fused":
        shutil.copy(scratch / "fused.onnx", target)
        return None, None
    precision = options.precision.get(variant) or precision_config(variant, reference.spec, options.calibration_method,
                                                                   options.activation_scales)
    source = scratch / "fused.onnx" if precision.source_graph == "fused" else reference.bundle.onnx_path
    feeds = None
    if precision.is_static_int8:
        feeds = pad_to_common_length(calibration.feeds, reference.manifest.tokenizer_settings.pad_token_id)
    search = None
    if options.int8_search is not None and variant.startswith("int8") and variant not in options.precision:
        try:
            search = search_int8(precision, source, gate, lambda path, g: _score(reference, path, g, options),
                                 feeds or _probe_feeds(reference), options.int8_search, progress,
                                 gate_items=reference.gate_items)
            precision = search.precision
        except UserInputError as e:  # e.g. a small evaluation file leaves no held-out data for a search split
            progress(f"{variant}: int8 search skipped ({e}); the spec's recipe goes to the gate as it is")
    # The published graph is made afresh from its config alone, exactly as `distilrt rebuild` will make it.
    convert(precision, source, target, feeds, progress=progress)
    return precision, search


def _score(reference: Reference, path: Path, gate: Gate, options: VariantOptions):
    with open_backend("onnxruntime", path) as model:
        return reference.gate_on_search_split(model, gate, options.int8_search, options)


def _probe_feeds(reference: Reference) -> list[dict]:
    """Real inputs for the sensitivities of a recipe that calibrates on nothing (dynamic int8): 16 model inputs
    of the calibration split, made with the runtime's preprocessing."""
    made = calibration_set(reference.head, CalibConfig(size=16), reference.model.input_names)
    return pad_to_common_length(made.feeds, reference.manifest.tokenizer_settings.pad_token_id)


def _variant_manifest(reference: Reference, variant: str, options: VariantOptions, precision, gate: Gate,
                      fused_ops, calibration, search: SearchResult | None) -> dict:
    base = reference.manifest
    uses_fusion = variant == "fused" or (precision is not None and precision.source_graph == "fused")
    static_int8 = precision is not None and precision.is_static_int8
    stages = {"derived_from": {"variant": base.variant, "sha256": base.onnx_sha256},
              "gate": gate.to_dict(), "evaluation": options.evaluation.to_dict()}
    if uses_fusion:
        stages["fuse"] = options.fuse.to_dict()
    if precision is not None:
        stages["precision"] = precision.to_dict()
    if static_int8:
        stages["calibration"] = options.calib.to_dict()
    if search is not None:
        stages["int8_search"] = {**search.record["search"], "passed": search.passed,
                                 "float_nodes": search.record["float_nodes"],
                                 "linear_layers": search.record["linear_layers"]}
    return base.derive(variant, model={"precision": _precision_label(variant)}, stages=stages,
                       fused_ops=fused_ops if uses_fusion else None,
                       calibration=calibration.identity if static_int8 else None)


def _float_layers(bundle: Path, precision: PrecisionConfig | None) -> dict | None:
    """How many linear layers an int8 graph left in float, of how many: the accuracy bought with speed."""
    import onnx

    if precision is None or not precision.variant.startswith("int8"):
        return None
    graph = onnx.load(str(bundle / MODEL_FILE), load_external_data=False).graph
    in_float = weighted_nodes_of(graph, ("MatMul", "Attention"))  # a float weight: the layer was not quantized
    # Quantized layers: static Q/DQ MatMuls read a dequantized weight; dynamic ones became integer ops.
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    quantized = [n for n in graph.node if n.op_type in ("MatMulInteger", "MatMulIntegerToFloat", "QAttention",
                                                          "DynamicQuantizeMatMul")
                 or (n.op_type in ("MatMul", "Attention") and len(n.input) > 1 and n.input[1] in dequantized)]
    return {"float": len(in_float), "linear": len(in_float) + len(quantized), "searched": list(precision.float_nodes)}


def _precision_label(variant: str) -> str:
    return {"fused": "fp32", "fp16": "fp16"}.get(variant, "int8")
