"""TensorRT readiness lint: check an ONNX graph against what TensorRT's ONNX parser accepts, on CPU.

TensorRT 11 cannot be installed here or in CI (docs/design.md#tensorrt-on-these-machines), so a graph that
TensorRT would refuse would only be found on a user's GPU machine. This reads the graph with the onnx library
and checks it against the parser's documented operator list and rules (export/engines/parser_ops.py): the
opset, no ONNX Runtime-only operators, int8 Q/DQ in the one form TensorRT takes, the input shapes against the
bundle's shape profile, and tensor types. It runs before any engine build and as `distilrt lint BUNDLE`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import distilrt
from distilrt.errors import BundleError, UserInputError
from distilrt.export.config import ShapeProfile
from distilrt.export.engines import parser_ops as trt
from distilrt.export.engines.settings import input_shapes
from distilrt.tokenization import MASK_POSITIONS

DEFAULT_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INTEGER_INPUT_TYPES = ("INT32", "INT64")
FLOAT_SCALE_TYPES = ("FLOAT", "FLOAT16", "BFLOAT16")
# The axes of every distilrt input: [batch, sequence], or [batch, masks] for mask_positions (engines/settings.py).
PROFILE_AXES = ("batch", "sequence")
MASK_AXES = ("batch", "masks")


@dataclass(frozen=True)
class Finding:
    """One thing TensorRT's parser would refuse: ``rule`` is a short stable id, ``where`` the node, tensor or
    input, ``message`` what is wrong and how to fix it; ``subject`` (an op type, a dtype, an input name) is
    what a summary groups by."""

    rule: str
    where: str
    message: str
    subject: str = ""


@dataclass
class LintReport:
    model: str
    opset: int
    findings: list[Finding] = field(default_factory=list)
    checked: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        """True when TensorRT's parser would take the graph (no findings)."""
        return not self.findings

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def to_dict(self) -> dict:
        return {"model": self.model, "opset": self.opset, "ready": bool(self),
                "findings": [asdict(f) for f in self.findings], "checked": self.checked}

    def summary(self) -> str:
        """A headline, then one line per rule with its findings counted by subject, so that a report with
        hundreds of findings stays readable; each line ends with the first finding's fix."""
        nodes, pairs = self.checked.get("nodes", 0), self.checked.get("qdq_pairs", 0)
        if self:
            return f"ready for TensorRT ({nodes} nodes, {pairs} Q/DQ pairs checked)"
        lines = [f"NOT ready for TensorRT: {_count(len(self.findings), 'finding')} in {nodes} nodes"]
        groups: dict[str, list[Finding]] = {}
        for finding in self.findings:
            groups.setdefault(finding.rule, []).append(finding)
        for rule, group in groups.items():
            subjects = Counter(f.subject or f.where for f in group).most_common()
            listed = ", ".join(f"{subject} x{count}" for subject, count in subjects[:6])
            listed += ", ..." if len(subjects) > 6 else ""
            first = group[0]
            lines.append(f"{rule}: {_count(len(group), _UNITS.get(rule, 'node'))} ({listed}); "
                         f"e.g. {first.where}: {first.message}")
        return "\n".join(lines)


_UNITS = {"opset": "graph", "input-name": "input", "input-dtype": "input", "input-shape": "finding",
          "tensor-dtype": "tensor"}


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def lint_bundle(bundle_path: str | Path) -> LintReport:
    """Lint a bundle's ONNX graph against its manifest: shape profile, input names, model_max_length.

    An engine bundle (model.plan) is linted through the ONNX its engine was built from: the manifest's
    "fallback" file, model.onnx."""
    bundle = distilrt.read_bundle(bundle_path)
    model_path = bundle.onnx_path
    if model_path is None:
        raise UserInputError(f"bundle {bundle.path} holds {bundle.model_path.name} and no ONNX model: "
                             f"`distilrt lint` checks ONNX graphs (model.onnx) and engine bundles (model.plan)")
    if bundle.manifest.shape_profile is None:
        raise BundleError(f"manifest of {bundle.path} has no shape_profile; rebuild it with `distilrt build`")
    report = lint_model(model_path, ShapeProfile.from_dict(bundle.manifest.shape_profile), bundle.input_names,
                        model_max_length=bundle.tokenizer_settings.model_max_length)
    report.checked.update(bundle=str(bundle.path), variant=bundle.variant)
    return report


def lint_model(model_path: str | Path, profile: ShapeProfile, input_names: tuple[str, ...],
               model_max_length: int | None = None) -> LintReport:
    """Check one ONNX graph against TensorRT's ONNX parser; ``model_max_length`` bounds profile.max_sequence."""
    model = _load(Path(model_path))
    graph = model.graph
    opset, findings = _check_opset(model)
    nodes = list(_all_nodes(graph))
    constants = _constants(graph)
    qdq = [n for n in nodes if n.op_type in QDQ_OPS and n.domain in DEFAULT_DOMAINS]
    findings += _check_ops(nodes)
    findings += _check_qdq(qdq, constants)
    findings += _check_inputs(graph, profile, tuple(input_names), model_max_length)
    findings += _check_tensor_types(graph, nodes, qdq)
    checked = {
        "nodes": len(nodes),
        "op_types": dict(Counter(n.op_type for n in nodes).most_common()),
        "qdq_nodes": len(qdq),
        # Each DequantizeLinear ends one quantized tensor: an activation's Q/DQ pair or an int8 weight's DQ.
        "qdq_pairs": sum(1 for n in qdq if n.op_type == "DequantizeLinear"),
        "inputs": list(input_names),
        "shape_profile": profile.to_dict(),
        "model_max_length": model_max_length,
        "parser": {"operators": trt.TENSORRT_VERSION, "source": trt.SOURCE_URL,
                   "opsets": [trt.MIN_OPSET, trt.MAX_OPSET]},
    }
    return LintReport(str(model_path), opset, findings, checked)


def _load(path: Path):
    import onnx

    if not path.is_file():
        raise UserInputError(f"{path} does not exist; pass an ONNX model file or a bundle directory")
    try:
        # A full load: Q/DQ scales and zero points are read, and they can sit in external data.
        return onnx.load(str(path))
    except Exception as e:  # onnx raises protobuf's DecodeError and others for a file that is not ONNX
        raise UserInputError(f"{path} is not a readable ONNX model ({e})") from e


def _all_nodes(graph) -> Iterator:
    """Every node, including those in If/Loop/Scan bodies: the parser imports those too."""
    import onnx

    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _all_nodes(subgraph)


def _constants(graph) -> dict:
    """Tensors known when the engine is built: initializers and Constant node values, by name."""
    constants = {initializer.name: initializer for initializer in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = attribute.t
    return constants


def _type_name(data_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(data_type)


def _check_opset(model) -> tuple[int, list[Finding]]:
    versions = {entry.domain: entry.version for entry in model.opset_import}
    opset = versions.get("", versions.get("ai.onnx", 0))
    if trt.MIN_OPSET <= opset <= trt.MAX_OPSET:
        return opset, []
    found = f"opset {opset}" if opset else "no opset for the default ONNX domain"
    return opset, [Finding(
        "opset", "model", f"the graph has {found}; TensorRT's ONNX parser takes opsets {trt.MIN_OPSET} to "
        f"{trt.MAX_OPSET}: export again with an opset in that range (distilrt exports opset 17 by default) or "
        f"convert it with onnx.version_converter", subject=str(opset))]


def _check_ops(nodes) -> list[Finding]:
    findings = []
    for node in nodes:
        where, op = f"{node.op_type} node {node.name!r}", node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            if node.domain.startswith("com.microsoft"):
                what = f"{op} is an ONNX Runtime contrib op ({node.domain}), made by ONNX Runtime's fusion or " \
                       f"quantization"
            else:
                what = f"{op} is in the custom domain {node.domain!r}, which TensorRT takes only through a plugin"
            findings.append(Finding("ort-only-op", where, f"{what}; TensorRT's ONNX parser does not take it: use "
                                    f"the fp16 or int8-qdq-trt variant, made from the unfused graph", subject=op))
        elif op in trt.ORT_INTEGER_OPS:
            findings.append(Finding("ort-only-op", where, f"{op} is ONNX Runtime's integer quantization: standard "
                                    f"ONNX, but TensorRT's ONNX parser does not take it; use the int8-qdq-trt "
                                    f"variant (explicit int8 QuantizeLinear/DequantizeLinear)", subject=op))
        elif op not in trt.SUPPORTED_OPS:
            listed = "is marked unsupported" if op in trt.UNSUPPORTED_OPS else "is not listed"
            findings.append(Finding("unsupported-op", where, f"{op} {listed} in TensorRT's ONNX operator list "
                                    f"({trt.SOURCE_URL}); export without it or replace it with supported ops",
                                    subject=op))
    return findings


def _check_qdq(qdq_nodes, constants) -> list[Finding]:
    # TensorRT's rules for Q/DQ (onnx-tensorrt docs/operators.md, TensorRT 10.15): DequantizeLinear takes
    # "INT8, FP8, FP4, INT4" with "`x_zero_point` must be zero"; QuantizeLinear: "`y_zero_point` must be 0";
    # INT8 is a "Quantized Type", reached only by quantizing a float tensor, and UINT8 is "only supported as
    # network input or output". TensorRT's Quantize/Dequantize operator pages add: "The scale tensor must be a
    # build-time constant", a scalar (per-tensor) or 1-D (per-channel), and the zero point "must only contain
    # zero-valued coefficients" and "must have the same shape as scale"
    # (https://docs.nvidia.com/deeplearning/tensorrt/operators/docs/Quantize.html). distilrt's TensorRT form
    # is int8 (int8-qdq-trt), so the zero point must be an int8 constant of zeros.
    findings = []
    for node in qdq_nodes:
        where = f"{node.op_type} node {node.name!r}"
        scale_name = node.input[1] if len(node.input) > 1 else ""
        zero_point_name = node.input[2] if len(node.input) > 2 else ""
        scale = constants.get(scale_name)
        findings += _check_scale(node, where, scale_name, scale, constants)
        findings += _check_zero_point(node, where, zero_point_name, constants.get(zero_point_name), scale)
    return findings


def _check_scale(node, where: str, name: str, scale, constants) -> list[Finding]:
    from onnx import numpy_helper

    if scale is None:
        return [Finding("qdq-scale", where, f"scale {name!r} is computed at run time; TensorRT needs a "
                        f"build-time constant: make it an initializer (re-run static quantization)",
                        subject="scale not constant")]
    dtype = _type_name(scale.data_type)
    if dtype not in FLOAT_SCALE_TYPES:
        return [Finding("qdq-scale", where, f"scale {name!r} is {dtype}; TensorRT takes float32, float16 or "
                        f"bfloat16 scales", subject=f"scale {dtype}")]
    values = numpy_helper.to_array(scale).astype(np.float64)
    if values.ndim > 1:
        return [Finding("qdq-scale", where, f"scale {name!r} has shape {list(values.shape)}; TensorRT takes a "
                        f"scalar (per-tensor) or 1-D (per-channel) int8 scale", subject="scale rank")]
    bad = values[~np.isfinite(values) | (values <= 0)]
    if bad.size:
        return [Finding("qdq-scale", where, f"scale {name!r} holds {bad.size} value(s) that are not finite and "
                        f"> 0 (e.g. {bad.flat[0]}); a zero or negative scale comes from a degenerate calibration "
                        f"range: calibrate again on more data or leave this tensor in float",
                        subject="scale not > 0")]
    if values.size > 1:
        return _check_channel_count(node, where, name, values.size, constants)
    return []


def _check_channel_count(node, where: str, name: str, channels: int, constants) -> list[Finding]:
    """A per-channel scale needs one value per slice along ``axis`` of the quantized tensor (known when that
    tensor is a weight)."""
    weight = constants.get(node.input[0])
    if weight is None:
        return []
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    dims = list(weight.dims)
    if -len(dims) <= axis < len(dims) and dims[axis] == channels:
        return []
    return [Finding("qdq-scale", where, f"per-channel scale {name!r} has {channels} values but axis {axis} of "
                    f"{node.input[0]!r} (shape {dims}) does not have {channels} channels; quantize the weight "
                    f"again along the right axis", subject="scale length")]


def _check_zero_point(node, where: str, name: str, zero_point, scale) -> list[Finding]:
    from onnx import numpy_helper

    if not name:
        return [Finding("qdq-zero-point", where, "no zero point: TensorRT needs an explicit int8 zero point of 0 "
                        "(without one QuantizeLinear produces uint8); use the int8-qdq-trt variant",
                        subject="missing")]
    if zero_point is None:
        return [Finding("qdq-zero-point", where, f"zero point {name!r} is computed at run time; TensorRT needs a "
                        f"build-time constant int8 zero: make it an initializer", subject="not constant")]
    dtype = _type_name(zero_point.data_type)
    if dtype != "INT8":
        fix = ("uint8 Q/DQ with zero points is the ONNX Runtime CPU form (int8-qdq); TensorRT takes int8 with zero "
               "point 0: use the int8-qdq-trt variant" if dtype == "UINT8"
               else "distilrt's TensorRT form is int8 with zero point 0: use the int8-qdq-trt variant")
        return [Finding("qdq-type", where, f"zero point {name!r} is {dtype}: {fix}", subject=dtype)]
    values = numpy_helper.to_array(zero_point)
    if values.any():
        return [Finding("qdq-zero-point", where, f"zero point {name!r} is not 0 (values {sorted({int(v) for v in values.flat})[:4]}"
                        f"); TensorRT takes symmetric int8 only: quantize with symmetric activations and weights "
                        f"(the int8-qdq-trt variant)", subject="nonzero")]
    if scale is not None and list(zero_point.dims) != list(scale.dims):
        return [Finding("qdq-zero-point", where, f"zero point {name!r} has shape {list(zero_point.dims)} but the "
                        f"scale has {list(scale.dims)}; TensorRT needs the same shape", subject="shape")]
    return []


def _check_inputs(graph, profile: ShapeProfile, input_names: tuple[str, ...],
                  model_max_length: int | None) -> list[Finding]:
    weights = {initializer.name for initializer in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in weights}
    findings = [Finding("input-name", f"input {name!r}", f"the graph has no input {name!r} but the manifest lists "
                        f"{list(input_names)}; rebuild the bundle", subject=name)
                for name in input_names if name not in inputs]
    findings += [Finding("input-name", f"input {name!r}", f"graph input {name!r} is not in the manifest's inputs "
                         f"{list(input_names)}; rebuild the bundle", subject=name)
                 for name in inputs if name not in input_names]
    for name in (n for n in input_names if n in inputs):
        findings += _check_input(name, inputs[name], profile)
    if model_max_length is not None and profile.max_sequence > model_max_length:
        findings.append(Finding(
            "input-shape", "shape profile", f"the profile's max_sequence {profile.max_sequence} exceeds the model's "
            f"maximum of {model_max_length} tokens (position embeddings); build with max_sequence <= "
            f"{model_max_length}", subject="max_sequence"))
    return findings


def _check_input(name: str, value, profile: ShapeProfile) -> list[Finding]:
    where = f"input {name!r}"
    if not value.type.HasField("tensor_type"):
        return [Finding("input-dtype", where, f"input {name!r} is not a tensor; token inputs are int64 tensors "
                        f"[batch, sequence]: rebuild the bundle", subject=name)]
    tensor = value.type.tensor_type
    findings = []
    dtype = _type_name(tensor.elem_type)
    if dtype not in INTEGER_INPUT_TYPES:
        findings.append(Finding("input-dtype", where, f"input {name!r} is {dtype}; token ids and masks must be "
                                f"int32 or int64: export the graph with integer inputs", subject=name))
    dims = list(tensor.shape.dim) if tensor.HasField("shape") else None
    labels = MASK_AXES if name == MASK_POSITIONS else PROFILE_AXES
    if dims is None or len(dims) != len(labels):
        rank = "unknown" if dims is None else len(dims)
        return findings + [Finding("input-shape", where, f"input {name!r} has rank {rank}; TensorRT's profile "
                                   f"gives it [{', '.join(labels)}] (rank 2): export it with that shape", subject=name)]
    smallest, _, largest = input_shapes(name, profile)
    for axis, (dim, label, low, high) in enumerate(zip(dims, labels, smallest, largest)):
        if dim.HasField("dim_value") and not dim.dim_value == low == high:
            findings.append(Finding(
                "input-shape", where, f"input {name!r} fixes its {label} dimension (axis {axis}) at {dim.dim_value} "
                f"but the shape profile asks for {label} {low}..{high}: export with a dynamic {label} axis, or build "
                f"with a shape profile of {label} {dim.dim_value} only", subject=f"{name}[{label}]"))
    return findings


def _check_tensor_types(graph, nodes, qdq_nodes) -> list[Finding]:
    """Initializers, Constants, Casts and typed values must be types TensorRT takes. Q/DQ inputs and outputs
    are left to the qdq rules, which say more about them."""
    quantization = {name for node in qdq_nodes for name in (*node.input, *node.output)}
    io_names = {v.name for v in (*graph.input, *graph.output)}
    findings = []

    def check(name: str, data_type: int, where: str, what: str):
        dtype = _type_name(data_type)
        if name in quantization or dtype in trt.SUPPORTED_TENSOR_TYPES or dtype == "UNDEFINED":
            return
        if dtype in trt.IO_ONLY_TENSOR_TYPES and name in io_names:
            return
        fix = ("TensorRT casts DOUBLE down to float32, clamping to +-FLT_MAX: cast it to float32 in the export"
               if dtype == "DOUBLE" else f"TensorRT takes {', '.join(sorted(trt.SUPPORTED_TENSOR_TYPES))} (and "
               f"UINT8 only as a network input or output): cast it in the export")
        findings.append(Finding("tensor-dtype", where, f"{what} is {dtype}; {fix}", subject=dtype))

    for initializer in graph.initializer:
        check(initializer.name, initializer.data_type, f"initializer {initializer.name!r}", "the initializer")
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.HasField("tensor_type"):
            check(value.name, value.type.tensor_type.elem_type, f"value {value.name!r}", "the value")
        elif value.type.WhichOneof("value") is not None:
            findings.append(Finding("tensor-dtype", f"value {value.name!r}", f"the value is a "
                                    f"{value.type.WhichOneof('value')}; TensorRT takes tensors only",
                                    subject=value.type.WhichOneof("value")))
    for node in nodes:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                check(node.output[0], attribute.t.data_type, f"Constant node {node.name!r}", "its value")
            elif node.op_type == "Cast" and attribute.name == "to":
                check(node.output[0], attribute.i, f"Cast node {node.name!r}", "the cast's target type")
    return findings
