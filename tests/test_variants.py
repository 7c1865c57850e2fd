"""Fused, fp16 and int8 variants: built from the fp32 bundle, verified, gated with the default gates, and
loadable by the runtime."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from conftest import QA_CHECKPOINTS, small_variant_options

import distilrt
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.config import GATES, Gate
from distilrt.export.variants import VARIANTS, build_variants
from distilrt.host import default_threads

DERIVED = VARIANTS[1:]
# Variants of the tiny RANDOM-weight stand-ins that miss their gate, with what was measured. The gate is right to
# refuse them; each is listed so that a change in either direction is seen (docs/design.md#random-weights-and-gates).
KNOWN_GATE_MISSES = {
    # fp16 top-1 agreement with fp32 is 99.37% on 3,000 masked positions (gate 99.5): the 32-wide encoder's fp16
    # error against near-tied random logits. The same encoder with its MLM head kept in fp32 agrees 99.30% in the
    # graph before masked positions, which passed (99.77%) only because its head's fp16 rounding cancelled some.
    ("distilbert-base-uncased", "fp16"),
}


def _outcomes(tiny_variant_builds, name):
    fp32, outcomes = tiny_variant_builds[name]
    return fp32, {o.variant: o for o in outcomes}


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_every_variant_is_published_within_its_gate(tiny_variant_builds, name):
    fp32, outcomes = _outcomes(tiny_variant_builds, name)
    assert sorted(outcomes) == sorted(DERIVED)
    for variant, outcome in outcomes.items():
        gate = outcome.gate
        assert gate is not None, f"{variant} failed before its gate: {outcome.reason}"
        default_gate = GATES["int8" if variant.startswith("int8") else variant]
        assert gate["threshold"] == getattr(default_gate, gate["metric"])
        assert outcome.published == gate["passed"] == (gate["value"] >= gate["threshold"])
        if outcome.published:
            assert outcome.bundle == fp32.bundle.parent / variant and outcome.bundle.is_dir()
        else:
            assert "missed its gate" in outcome.reason and not (fp32.bundle.parent / variant).exists()
    refused = {v for v, o in outcomes.items() if not o.published}
    assert refused == {v for n, v in KNOWN_GATE_MISSES if n == name}, {v: o.reason for v, o in outcomes.items()}


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_variant_manifests_record_their_stages(tiny_variant_builds, name):
    fp32, outcomes = _outcomes(tiny_variant_builds, name)
    for variant in ("int8-qdq", "int8-qdq-trt"):
        identity = outcomes[variant].calibration
        assert identity["size"] == 64 and len(identity["sha256"]) == 64 and identity["split"] == "calibration"
    for variant, outcome in outcomes.items():
        if not outcome.published:
            continue
        manifest = distilrt.read_bundle(outcome.bundle).manifest
        assert manifest.variant == variant
        assert manifest.stage("derived_from")["sha256"] == fp32.manifest.onnx_sha256
        assert manifest.verification["passed"] is True
        assert manifest.stage("gate") == GATES["int8" if variant.startswith("int8") else variant].to_dict()
        if variant in ("fused", "int8-dynamic"):
            assert manifest.fused_ops["Attention"] >= 1 and manifest.stage("fuse") is not None
        else:
            assert manifest.fused_ops is None
        if variant.startswith("int8-qdq"):
            assert manifest.calibration == outcome.calibration
            assert manifest.stage("precision")["calibration_method"] == "Percentile"
            assert manifest.stage("precision")["keep_float"]
        else:
            assert manifest.calibration is None
        assert manifest.verification["figures"]["evaluation_set"]["split"] == "evaluation"
        # its own verification run's settings, not fp32's inherited ones
        assert manifest.run_settings == {"backend": "onnxruntime", "intra_op_num_threads": default_threads().count,
                                         "threads_source": default_threads().source}


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_published_variants_run_in_the_runtime(tiny_variant_builds, name):
    _, outcomes = _outcomes(tiny_variant_builds, name)
    for outcome in (o for o in outcomes.values() if o.published):
        head = distilrt.load(outcome.bundle)
        if name in QA_CHECKPOINTS:
            result = head(question="Who wrote it?", context="It was written by Ada Lovelace in 1843.")
            assert set(result) == {"score", "start", "end", "answer"}
        else:
            mask = distilrt.read_bundle(outcome.bundle).manifest.tokenizer_settings.mask_token
            assert len(head(f"Paris is the {mask} of France.", top_k=3)) == 3


@pytest.fixture(scope="module")
def static_int8_graphs(tiny_bundles, tmp_path_factory):
    """int8-qdq and int8-qdq-trt graphs of every stand-in, made directly (whatever their gate would say)."""
    from distilrt.calib.sets import CalibConfig, calibration_set
    from distilrt.export.precision import convert, pad_to_common_length
    from distilrt.export.specs import get_spec
    from distilrt.export.variants import precision_config

    graphs = {}
    for name, result in tiny_bundles.items():
        spec = get_spec(result.manifest.architecture)
        head = distilrt.load(result.bundle)
        calibration = calibration_set(head, CalibConfig(size=16, max_seq_len=128), result.input_names)
        feeds = pad_to_common_length(calibration.feeds, result.manifest.tokenizer_settings.pad_token_id)
        for variant in ("int8-qdq", "int8-qdq-trt"):
            target = tmp_path_factory.mktemp(variant) / "model.onnx"
            convert(precision_config(variant, spec, "Percentile"), result.bundle / "model.onnx", target, feeds)
            graphs[name, variant] = target
    return graphs


def _load(path):
    import onnx

    return onnx.load(str(path))


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_int8_qdq_trt_follows_tensorrt_rules(static_int8_graphs, name):
    """TensorRT 11 takes int8 Q/DQ only: zero point 0 and int8 everywhere, weights quantized per channel."""
    from onnx import numpy_helper

    model = _load(static_int8_graphs[name, "int8-qdq-trt"])
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for node in qdq:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8, (node.name, zero_point.dtype)
        assert not zero_point.any(), f"{node.name} has a non-zero zero point"
    weight_dequantizers = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in initializers]
    assert weight_dequantizers
    for node in weight_dequantizers:
        scale = initializers[node.input[1]]
        assert scale.ndim == 1 and scale.size > 1, f"{node.name}: weights not per-channel"
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"MatMulInteger", "DynamicQuantizeLinear", "QAttention"}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), "ONNX Runtime-only ops in a TensorRT graph"


def test_the_cpu_qdq_form_is_asymmetric_uint8(static_int8_graphs):
    from onnx import numpy_helper

    model = _load(static_int8_graphs["distilroberta-base", "int8-qdq"])
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activation_zero_points = [initializers[n.input[2]] for n in model.graph.node
                              if n.op_type == "QuantizeLinear" and n.input[0] not in initializers]
    assert activation_zero_points and all(z.dtype == np.uint8 for z in activation_zero_points)


@pytest.mark.parametrize("variant", ["int8-qdq", "int8-qdq-trt"])
def test_static_int8_quantizes_only_linear_layers(static_int8_graphs, variant):
    """Only the linear layers' MatMuls get quantized inputs: LayerNorm, GELU, Softmax, embeddings, attention's
    activation x activation MatMuls and the task head stay in float."""
    model = _load(static_int8_graphs["distilbert-base-uncased-distilled-squad", variant])
    weights = {i.name for i in model.graph.initializer}
    dequantized = {o: n for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers = [n for n in model.graph.node if dequantized.keys() & set(n.input)]
    matmuls = [n for n in consumers if n.op_type == "MatMul"]
    assert len(matmuls) == 2 * 6  # tiny stand-in: 2 layers x (q, k, v, output, two FFN) linear layers
    assert all(dequantized[n.input[1]].input[0] in weights for n in matmuls)  # weight on the right
    assert not any("qa_outputs" in n.name for n in matmuls)
    assert {n.op_type for n in consumers} == {"MatMul"}


def test_int8_dynamic_uses_per_token_scales_and_keeps_attention_fused(tiny_variant_builds):
    """The default int8-dynamic: per-row QuantizeLinear into MatMulIntegerToFloat, fused MultiHeadAttention; none
    of ONNX Runtime's per-tensor ops (DynamicQuantizeLinear, QAttention) is left."""
    _, outcomes = _outcomes(tiny_variant_builds, "distilbert-base-uncased")
    ops = {n.op_type for n in _load(outcomes["int8-dynamic"].bundle / "model.onnx").graph.node}
    assert {"QuantizeLinear", "MatMulIntegerToFloat", "MultiHeadAttention"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "QAttention", "DynamicQuantizeMatMul"}


def test_fp16_keeps_io_fp32_and_reports_how_it_was_checked(tiny_variant_builds):
    import onnx

    _, outcomes = _outcomes(tiny_variant_builds, "distilroberta-base")
    model = _load(outcomes["fp16"].bundle / "model.onnx")
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    # LayerNormalization and Softmax stay fp32: their inputs arrive through Casts to float
    casts_to_fp32 = {o for n in model.graph.node if n.op_type == "Cast"
                     and n.attribute[0].i == onnx.TensorProto.FLOAT for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert node.input[0] in casts_to_fp32 or node.input[0].startswith("/"), node.name
    report = json.loads((outcomes["fp16"].bundle / "report.json").read_text())
    method = report["fp16_parity_method"]
    assert method["engine"].startswith("onnxruntime") and method["computes_in_fp16"] is False
    assert "MatMul" in method["ops_upcast_to_fp32"]


def test_a_variant_that_misses_its_gate_is_not_published(tiny_variant_builds, tmp_path):
    """An unreachable gate: the variant is reported with its margin and no bundle appears."""
    import shutil

    from distilrt.export.build import BuildResult

    fp32, _ = tiny_variant_builds["distilbert-base-cased-distilled-squad"]
    copy = tmp_path / fp32.bundle.parent.name / "fp32"
    shutil.copytree(fp32.bundle, copy)
    options = small_variant_options()
    impossible = {**options.gates, "fp16": Gate(None, qa_f1_vs_fp32=100.5, mlm_top1_vs_fp32=100.5)}
    outcomes = build_variants(BuildResult(copy, fp32.manifest, 0.0), ("fp16",), replace(options, gates=impossible),
                              progress=lambda m: None)
    (outcome,) = outcomes
    assert not outcome.published and outcome.bundle is None
    margin = outcome.gate["margin"]
    assert margin == pytest.approx(outcome.gate["value"] - 100.5) and margin < 0
    assert "missed its gate" in outcome.reason and f"by {-margin:.2f}" in outcome.reason
    assert sorted(p.name for p in copy.parent.iterdir()) == ["fp32"]


def test_a_variant_rebuilds_from_its_manifest_alone(tiny_variant_builds, tmp_path, capsys):
    """fp32 is rebuilt first, then the variant with the recorded fuse/precision/calibration/gate configs."""
    from distilrt.cli import main

    _, outcomes = _outcomes(tiny_variant_builds, "albert-base-v2")
    original = outcomes["int8-qdq-trt"].bundle
    assert main(["rebuild", str(original), "--out", str(tmp_path)]) == 0
    assert "identical to the original: model.onnx yes, tokenizer.json yes" in capsys.readouterr().out
    rebuilt = distilrt.read_bundle(tmp_path / "albert-base-v2" / "int8-qdq-trt").manifest
    assert rebuilt["calibration"] == outcomes["int8-qdq-trt"].calibration
