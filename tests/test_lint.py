"""The TensorRT readiness lint: the variants meant for TensorRT pass, the ONNX Runtime-only ones are rejected
with the reason, and each rule fires on a small graph made to break it (and not on one that keeps it)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import distilrt
from distilrt.cli import main
from distilrt.errors import BundleError, UserInputError
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.config import ShapeProfile
from distilrt.export.engines import parser_ops as trt
from distilrt.export.engines.lint import Finding, LintReport, lint_bundle, lint_model
from distilrt.files import sha256_file

TENSORRT_READY = ("fp32", "fp16", "int8-qdq-trt")
TOKEN_INPUT = ("input_ids",)


def _bundle(tiny_variant_builds, name: str, variant: str):
    """The published bundle of ``variant``: a variant with no outcome fails the test, one that was built but
    not published (it missed its gate) is skipped with the reason."""
    fp32, outcomes = tiny_variant_builds[name]
    if variant == "fp32":
        bundle = fp32.bundle
    else:
        outcome = next((o for o in outcomes if o.variant == variant), None)
        if outcome is None:
            pytest.fail(f"{name}: the build has no {variant} outcome (built: {[o.variant for o in outcomes]})")
        if not outcome.published:
            pytest.skip(f"{name} {variant} was not published: {outcome.reason}")
        bundle = outcome.bundle
    assert bundle is not None and bundle.is_dir(), f"{name} {variant}: bundle {bundle} is missing"
    return bundle


def _ort_only_op_types(bundle) -> set[str]:
    """What the graph holds that only ONNX Runtime runs, read independently of the lint."""
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    return {n.op_type for n in graph.node if n.domain not in ("", "ai.onnx") or n.op_type in trt.ORT_INTEGER_OPS}


# --- the variants of the five stand-ins -------------------------------------------------------------------


@pytest.mark.parametrize("variant", TENSORRT_READY)
@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_tensorrt_variants_lint_clean(tiny_variant_builds, name, variant):
    report = lint_bundle(_bundle(tiny_variant_builds, name, variant))
    assert report, report.summary()
    assert report.findings == [] and report.opset == 17
    assert report.summary().startswith("ready for TensorRT (")
    assert report.checked["variant"] == variant and report.checked["nodes"] > 0
    if variant == "int8-qdq-trt":
        assert report.checked["qdq_pairs"] > 0 and report.checked["op_types"]["QuantizeLinear"] > 0


# int8-dynamic's uint8 weights (its CPU recipe, docs/design.md#quantization) are a type TensorRT has not either,
# and its per-token QuantizeLinear has per-row scales and zero points computed at run time, not constants
# (docs/design.md#batch-invariance).
_INT8_DYNAMIC_RULES = {"tensor-dtype", "qdq-type", "qdq-scale", "qdq-zero-point"}


@pytest.mark.parametrize("variant, must_name, other_rules", [
    ("fused", {"Attention", "SkipLayerNormalization"}, set()),
    ("int8-dynamic", {"MatMulIntegerToFloat", "MultiHeadAttention"}, _INT8_DYNAMIC_RULES),
])
@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_onnx_runtime_variants_are_rejected_with_the_op_types(tiny_variant_builds, name, variant, must_name,
                                                              other_rules):
    bundle = _bundle(tiny_variant_builds, name, variant)
    report = lint_bundle(bundle)
    assert not report and "ort-only-op" in report.rules() and report.rules() - {"ort-only-op"} <= other_rules
    for finding in report.findings:
        if finding.rule in ("tensor-dtype", "qdq-type"):
            assert finding.subject == "UINT8", finding
        elif finding.rule != "ort-only-op":  # per-token QuantizeLinear: run-time scales and zero points
            assert finding.subject in ("scale not constant", "not constant"), finding
    ops = [f for f in report.findings if f.rule == "ort-only-op"]
    for finding in ops:
        assert finding.subject in finding.message and "TensorRT" in finding.message, finding
    named = {f.subject for f in ops}
    assert named == _ort_only_op_types(bundle)
    assert must_name <= named
    summary = report.summary()
    assert f"ort-only-op: {len(ops)} nodes (" in summary and all(op in summary for op in named)


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_uint8_qdq_is_rejected_as_the_cpu_form(tiny_variant_builds, name):
    report = lint_bundle(_bundle(tiny_variant_builds, name, "int8-qdq"))
    assert report.rules() == {"qdq-type"}
    assert all("UINT8" in f.message and "int8-qdq-trt" in f.message for f in report.findings)


# --- one small graph per rule -----------------------------------------------------------------------------

PROFILE = ShapeProfile(min_batch=1, opt_batch=1, max_batch=8, min_sequence=1, opt_sequence=16, max_sequence=64)
CHANNELS = 4


def _save(tmp_path, nodes, inputs, outputs, initializers=(), opset=17, domains=(), name="model.onnx"):
    graph = helper.make_graph(list(nodes), "lint-case", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets)
    # onnx 1.23 writes IR 14, which onnxruntime 1.31 cannot load (docs/design.md#export-and-attention-implementation)
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _token_input(dtype=TensorProto.INT64, shape=("batch", "sequence")):
    return helper.make_tensor_value_info("input_ids", dtype, list(shape))


def _qdq_graph(tmp_path, *, activation_zero_point=np.int8(0), activation_scale=0.05, scale_from_node=False,
               weight_scale=None, input_shape=("batch", "sequence")):
    """input_ids -> float [batch, sequence, 1] -> Q/DQ (per tensor) -> MatMul with a DQ'd int8 weight
    [1, CHANNELS] (per channel, axis 1) -> [batch, sequence, CHANNELS]: the shape of int8-qdq-trt's linears."""
    weight_scale = np.full(CHANNELS, 0.02, np.float32) if weight_scale is None else weight_scale
    initializers = [
        numpy_helper.from_array(np.array([2], np.int64), "last_axis"),
        numpy_helper.from_array(np.array(activation_zero_point), "x_zero_point"),
        numpy_helper.from_array(np.arange(-2, 2, dtype=np.int8).reshape(1, CHANNELS), "w_quantized"),
        numpy_helper.from_array(np.asarray(weight_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(np.asarray(weight_scale).shape, np.int8), "w_zero_point"),
    ]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_float"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_float", "last_axis"], ["x"], name="unsqueeze"),
    ]
    if scale_from_node:  # the scale is computed when the graph runs, not known when the engine is built
        initializers.append(numpy_helper.from_array(np.array(activation_scale, np.float32), "half_scale"))
        nodes.append(helper.make_node("Add", ["half_scale", "half_scale"], ["x_scale"], name="computed_scale"))
    else:
        initializers.append(numpy_helper.from_array(np.array(activation_scale, np.float32), "x_scale"))
    nodes += [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["x_q"], name="x_quantize"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x_dq"], name="x_dequantize"),
        helper.make_node("DequantizeLinear", ["w_quantized", "w_scale", "w_zero_point"], ["w"], name="w_dequantize",
                         axis=1),
        helper.make_node("MatMul", ["x_dq", "w"], ["logits"], name="linear"),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", CHANNELS])
    return _save(tmp_path, nodes, [_token_input(shape=input_shape)], [output], initializers)


def _identity_graph(tmp_path, *, opset=17, node=None, input_dtype=TensorProto.INT64, input_shape=("batch", "sequence"),
                    domains=()):
    node = node or helper.make_node("Identity", ["input_ids"], ["out"], name="identity")
    output = helper.make_tensor_value_info("out", input_dtype, list(input_shape))
    return _save(tmp_path, [node], [_token_input(input_dtype, input_shape)], [output], opset=opset, domains=domains)


def test_a_clean_qdq_graph_passes_and_runs(tmp_path):
    import onnxruntime as ort

    path = _qdq_graph(tmp_path)
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input_ids": np.array([[1, 2, 3]], np.int64)})
    assert logits.shape == (1, 3, CHANNELS)
    report = lint_model(path, PROFILE, TOKEN_INPUT)
    assert report and report.findings == [], report.summary()
    assert report.checked["qdq_nodes"] == 3 and report.checked["qdq_pairs"] == 2
    assert report.summary() == f"ready for TensorRT ({report.checked['nodes']} nodes, 2 Q/DQ pairs checked)"


@pytest.mark.parametrize("case, rule, where, says", [
    (dict(activation_zero_point=np.uint8(128)), "qdq-type", "x_quantize", "UINT8"),
    (dict(activation_zero_point=np.int8(3)), "qdq-zero-point", "x_quantize", "is not 0"),
    (dict(scale_from_node=True), "qdq-scale", "x_quantize", "computed at run time"),
    (dict(activation_scale=0.0), "qdq-scale", "x_quantize", "not finite and > 0"),
    (dict(activation_scale=-0.05), "qdq-scale", "x_quantize", "not finite and > 0"),
    (dict(activation_scale=float("nan")), "qdq-scale", "x_quantize", "not finite and > 0"),
    (dict(weight_scale=np.full(CHANNELS - 1, 0.02, np.float32)), "qdq-scale", "w_dequantize", "channels"),
])
def test_each_qdq_rule_fires_on_its_broken_graph(tmp_path, case, rule, where, says):
    report = lint_model(_qdq_graph(tmp_path, **case), PROFILE, TOKEN_INPUT)
    assert not report and report.rules() == {rule}, report.summary()
    assert any(where in f.where and says in f.message for f in report.findings), report.findings


def test_a_missing_zero_point_is_refused(tmp_path):
    """Without a zero point ONNX's QuantizeLinear produces uint8, which TensorRT refuses."""
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["x"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("QuantizeLinear", ["x", "scale"], ["x_q"], name="quantize"),
        helper.make_node("DequantizeLinear", ["x_q", "scale"], ["out"], name="dequantize"),
    ]
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "sequence"])
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    report = lint_model(_save(tmp_path, nodes, [_token_input()], [output], [scale]), PROFILE, TOKEN_INPUT)
    assert report.rules() == {"qdq-zero-point"} and len(report.findings) == 2
    assert all("no zero point" in f.message for f in report.findings)


@pytest.mark.parametrize("opset", [8, trt.MAX_OPSET + 1])
def test_an_opset_outside_the_parsers_range_is_refused(tmp_path, opset):
    report = lint_model(_identity_graph(tmp_path, opset=opset), PROFILE, TOKEN_INPUT)
    assert report.rules() == {"opset"} and report.opset == opset
    assert f"opset {opset}" in report.findings[0].message and f"{trt.MIN_OPSET} to {trt.MAX_OPSET}" in \
        report.findings[0].message


def test_an_opset_inside_the_range_passes(tmp_path):
    assert lint_model(_identity_graph(tmp_path, opset=trt.MAX_OPSET), PROFILE, TOKEN_INPUT)


@pytest.mark.parametrize("op_type, listed", [("BitwiseNot", "is marked unsupported"), ("Swish", "is not listed")])
def test_an_op_the_parser_does_not_support_is_refused(tmp_path, op_type, listed):
    node = helper.make_node(op_type, ["input_ids"], ["out"], name="odd_op")
    report = lint_model(_identity_graph(tmp_path, opset=trt.MAX_OPSET, node=node), PROFILE, TOKEN_INPUT)
    assert report.rules() == {"unsupported-op"}
    (finding,) = report.findings
    assert finding.subject == op_type and op_type in finding.message and listed in finding.message


@pytest.mark.parametrize("domain, op_type, says", [
    ("com.microsoft", "FastGelu", "ONNX Runtime contrib op"),
    ("", "MatMulInteger", "use the int8-qdq-trt variant"),
    ("", "DynamicQuantizeLinear", "use the int8-qdq-trt variant"),
])
def test_onnx_runtime_only_ops_are_refused(tmp_path, domain, op_type, says):
    node = helper.make_node(op_type, ["input_ids"], ["out"], name="ort_op", domain=domain)
    path = _identity_graph(tmp_path, node=node, domains=(domain,) if domain else ())
    report = lint_model(path, PROFILE, TOKEN_INPUT)
    assert report.rules() == {"ort-only-op"}
    assert op_type in report.findings[0].message and says in report.findings[0].message


def test_a_fixed_dimension_that_conflicts_with_the_profile_is_refused(tmp_path):
    report = lint_model(_qdq_graph(tmp_path, input_shape=(1, 128)), PROFILE, TOKEN_INPUT)
    assert report.rules() == {"input-shape"}
    messages = {f.subject: f.message for f in report.findings}
    assert set(messages) == {"input_ids[batch]", "input_ids[sequence]"}
    assert "at 128" in messages["input_ids[sequence]"] and "sequence 1..64" in messages["input_ids[sequence]"]
    assert "at 1" in messages["input_ids[batch]"] and "batch 1..8" in messages["input_ids[batch]"]


def test_a_fixed_dimension_the_profile_pins_passes(tmp_path):
    batch_of_one = ShapeProfile(min_batch=1, opt_batch=1, max_batch=1, min_sequence=1, opt_sequence=16,
                                max_sequence=64)
    assert lint_model(_qdq_graph(tmp_path, input_shape=(1, "sequence")), batch_of_one, TOKEN_INPUT)


def test_a_profile_beyond_the_models_maximum_is_refused(tmp_path):
    path = _identity_graph(tmp_path)
    assert lint_model(path, PROFILE, TOKEN_INPUT, model_max_length=64)
    report = lint_model(path, PROFILE, TOKEN_INPUT, model_max_length=32)
    assert report.rules() == {"input-shape"} and "max_sequence 64 exceeds" in report.findings[0].message


@pytest.mark.parametrize("dtype, shape, rule", [
    (TensorProto.FLOAT, ("batch", "sequence"), "input-dtype"),
    (TensorProto.INT64, ("batch", "sequence", "hidden"), "input-shape"),
])
def test_inputs_must_be_integer_and_rank_two(tmp_path, dtype, shape, rule):
    report = lint_model(_identity_graph(tmp_path, input_dtype=dtype, input_shape=shape), PROFILE, TOKEN_INPUT)
    assert report.rules() == {rule} and "input_ids" in report.findings[0].message


def test_inputs_must_match_the_manifest(tmp_path):
    report = lint_model(_identity_graph(tmp_path), PROFILE, ("input_ids", "attention_mask"))
    assert report.rules() == {"input-name"} and "attention_mask" in report.findings[0].message


def test_a_double_initializer_is_refused(tmp_path):
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_double"], name="to_double", to=TensorProto.DOUBLE),
        helper.make_node("Add", ["ids_double", "offset"], ["shifted"], name="shift"),
        helper.make_node("Cast", ["shifted"], ["out"], name="to_float", to=TensorProto.FLOAT),
    ]
    offset = numpy_helper.from_array(np.array(0.5, np.float64), "offset")
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "sequence"])
    report = lint_model(_save(tmp_path, nodes, [_token_input()], [output], [offset]), PROFILE, TOKEN_INPUT)
    assert report.rules() == {"tensor-dtype"}
    assert {f.where for f in report.findings} == {"initializer 'offset'", "Cast node 'to_double'"}
    assert all(f.subject == "DOUBLE" and "float32" in f.message for f in report.findings)


def test_a_long_report_is_summarised_by_rule_and_op_type(tmp_path):
    nodes = [helper.make_node("FastGelu" if i % 3 else "BiasGelu", [f"t{i}"], [f"t{i + 1}"], name=f"gelu_{i}",
                              domain="com.microsoft") for i in range(300)]
    nodes.insert(0, helper.make_node("Cast", ["input_ids"], ["t0"], name="cast", to=TensorProto.FLOAT))
    output = helper.make_tensor_value_info("t300", TensorProto.FLOAT, ["batch", "sequence"])
    path = _save(tmp_path, nodes, [_token_input()], [output], domains=("com.microsoft",))
    report = lint_model(path, PROFILE, TOKEN_INPUT)
    lines = report.summary().splitlines()
    assert lines[0] == "NOT ready for TensorRT: 300 findings in 301 nodes"
    assert len(lines) == 2 and lines[1].startswith("ort-only-op: 300 nodes (FastGelu x200, BiasGelu x100); e.g. ")
    assert json.loads(json.dumps(report.to_dict()))["ready"] is False


def test_a_report_is_true_only_when_clean():
    clean = LintReport("m.onnx", 17, [], {"nodes": 3, "qdq_pairs": 0})
    dirty = LintReport("m.onnx", 17, [Finding("opset", "model", "bad")], {"nodes": 3})
    assert clean and not dirty and dirty.rules() == {"opset"} and clean.rules() == set()
    assert dirty.to_dict()["findings"] == [{"rule": "opset", "where": "model", "message": "bad", "subject": ""}]


def test_the_operator_list_is_consistent():
    """Every name is a real ONNX operator (a typo would silently refuse or pass an op), except the three
    experimental ops that operators.md still lists and onnx no longer defines."""
    assert not trt.SUPPORTED_OPS & trt.UNSUPPORTED_OPS
    assert trt.ORT_INTEGER_OPS <= trt.UNSUPPORTED_OPS
    unknown = {op for op in trt.SUPPORTED_OPS | trt.UNSUPPORTED_OPS if not onnx.defs.has(op)}
    assert unknown == {"ImageScaler", "ParametricSoftplus", "ScaledTanh"}
    assert trt.MIN_OPSET <= 17 <= trt.MAX_OPSET  # what distilrt exports


# --- bundles that are not plain ONNX bundles --------------------------------------------------------------


def _engine_copy(source, destination, *, keep_onnx: bool = True):
    """A copy of an ONNX bundle made into an engine bundle: model.plan as its model (never read here), and the
    ONNX as its fallback, or no ONNX at all."""
    shutil.copytree(source, destination)
    (destination / "model.plan").write_bytes(b"not really an engine")
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["model"].update(file="model.plan", format="tensorrt-plan", backend="tensorrt")
    manifest["files"]["model.plan"] = sha256_file(destination / "model.plan")
    if keep_onnx:
        manifest["fallback"] = {"file": "model.onnx", "format": "onnx", "backend": "onnxruntime"}
    else:
        (destination / "model.onnx").unlink()
        del manifest["files"]["model.onnx"]
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


def test_an_engine_bundle_is_linted_through_its_onnx(tiny_variant_builds, tmp_path):
    source = _bundle(tiny_variant_builds, "distilbert-base-uncased", "int8-qdq-trt")
    engine = _engine_copy(source, tmp_path / "engine")
    report = lint_bundle(engine)
    assert report and report.model == str(engine / "model.onnx")
    (engine / "model.onnx").unlink()
    with pytest.raises(BundleError, match="missing model.onnx"):
        lint_bundle(engine)


def test_a_bundle_without_onnx_is_a_user_error(tiny_variant_builds, tmp_path):
    source = _bundle(tiny_variant_builds, "distilbert-base-uncased", "fp32")
    other = _engine_copy(source, tmp_path / "other", keep_onnx=False)
    assert distilrt.read_bundle(other).onnx_path is None
    with pytest.raises(UserInputError, match="no ONNX model"):
        lint_bundle(other)


# --- the command ------------------------------------------------------------------------------------------


def test_lint_command_on_a_ready_bundle(tiny_variant_builds, capsys):
    bundle = _bundle(tiny_variant_builds, "distilroberta-base", "int8-qdq-trt")
    assert main(["lint", str(bundle)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{bundle}: ready for TensorRT (") and "Q/DQ pairs checked)" in out and err == ""


def test_lint_command_rejects_with_one_line_and_writes_json(tiny_variant_builds, tmp_path, capsys):
    ready = _bundle(tiny_variant_builds, "distilbert-base-cased-distilled-squad", "fp16")
    rejected = _bundle(tiny_variant_builds, "distilbert-base-cased-distilled-squad", "int8-dynamic")
    report_file = tmp_path / "lint.json"
    assert main(["lint", str(ready), str(rejected), "--json", str(report_file)]) == 1
    out, err = capsys.readouterr()
    assert f"{ready}: ready for TensorRT" in out
    assert f"{rejected}: NOT ready for TensorRT" in out and "ort-only-op: " in out and "MatMulIntegerToFloat x" in out
    assert err.startswith("distilrt: error: 1 of 2 bundles not ready for TensorRT: ") and err.count("\n") == 1
    assert f"{rejected} (ort-only-op" in err
    reports = json.loads(report_file.read_text())
    assert [r["ready"] for r in reports] == [True, False]
    assert "ort-only-op" in {f["rule"] for f in reports[1]["findings"]} <= {"ort-only-op"} | _INT8_DYNAMIC_RULES


def test_lint_command_on_a_missing_bundle(tmp_path, capsys):
    assert main(["lint", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distilrt: error: ") and "does not exist" in err and err.count("\n") == 1
