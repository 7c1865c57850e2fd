"""Fused, fp16 and int8 variants: built from the fp32 bundle, verified, gated, loadable by the runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import distilrt
from conftest import QA_CHECKPOINTS, small_variant_options
from distilrt.export.assets import SEED_CHECKPOINTS
from distilrt.export.config import Gate
from distilrt.export.variants import VARIANTS, build_variants

DERIVED = VARIANTS[1:]


def _outcomes(tiny_variant_builds, name):
    fp32, outcomes = tiny_variant_builds[name]
    return fp32, {o.variant: o for o in outcomes}


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_every_variant_is_published_within_its_gate(tiny_variant_builds, name):
    fp32, outcomes = _outcomes(tiny_variant_builds, name)
    assert sorted(outcomes) == sorted(DERIVED)
    for variant, outcome in outcomes.items():
        assert outcome.published, f"{variant}: {outcome.reason}"
        assert outcome.bundle == fp32.bundle.parent / variant
        assert outcome.gate["passed"] and outcome.gate["value"] >= outcome.gate["threshold"]
    summary = json.loads((fp32.bundle.parent / "build-summary.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == list(VARIANTS)


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_variant_manifests_record_their_stages(tiny_variant_builds, name):
    fp32, outcomes = _outcomes(tiny_variant_builds, name)
    for variant, outcome in outcomes.items():
        manifest = distilrt.read_bundle(outcome.bundle).manifest
        assert manifest["variant"] == variant
        assert manifest["stages"]["derived_from"]["sha256"] == fp32.manifest["files"]["model.onnx"]
        assert manifest["verification"]["passed"] is True
        if variant in ("fused", "int8-dynamic"):
            assert manifest["fused_ops"]["Attention"] >= 1 and "fuse" in manifest["stages"]
        else:
            assert manifest["fused_ops"] is None
        if variant in ("int8-qdq", "int8-qdq-trt"):
            identity = manifest["calibration"]
            assert identity["size"] == 32 and len(identity["sha256"]) == 64 and identity["split"] == "calibration"
            assert manifest["stages"]["precision"]["calibration_method"] == "Percentile"
        else:
            assert manifest["calibration"] is None
        figures = manifest["verification"]["figures"]
        assert figures["evaluation_set"]["split"] == "evaluation"


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_variants_run_in_the_runtime(tiny_variant_builds, name):
    _, outcomes = _outcomes(tiny_variant_builds, name)
    for outcome in outcomes.values():
        head = distilrt.load(outcome.bundle)
        if name in QA_CHECKPOINTS:
            result = head(question="Who wrote it?", context="It was written by Ada Lovelace in 1843.")
            assert set(result) == {"score", "start", "end", "answer"}
        else:
            mask = distilrt.read_bundle(outcome.bundle).manifest["tokenizer"]["settings"]["mask_token"]
            assert len(head(f"Paris is the {mask} of France.", top_k=3)) == 3


def _graph(outcome):
    import onnx

    return onnx.load(str(outcome.bundle / "model.onnx"))


@pytest.mark.parametrize("name", list(SEED_CHECKPOINTS))
def test_int8_qdq_trt_follows_tensorrt_rules(tiny_variant_builds, name):
    """TensorRT 11 takes int8 Q/DQ only: zero point 0 and int8 everywhere, weights quantized per channel."""
    from onnx import numpy_helper

    _, outcomes = _outcomes(tiny_variant_builds, name)
    model = _graph(outcomes["int8-qdq-trt"])
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for node in qdq:
        zero_point_name = node.input[2]
        zero_point = initializers[zero_point_name]
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


def test_int8_qdq_keeps_layernorm_softmax_gelu_residuals_in_float(tiny_variant_builds):
    _, outcomes = _outcomes(tiny_variant_builds, "distilbert-base-uncased-distilled-squad")
    model = _graph(outcomes["int8-qdq"])
    produced_by_dequantize = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers = {n.op_type for n in model.graph.node if produced_by_dequantize.intersection(n.input)}
    assert consumers == {"MatMul"}


def test_int8_dynamic_uses_the_cpu_fast_path(tiny_variant_builds):
    _, outcomes = _outcomes(tiny_variant_builds, "distilbert-base-uncased")
    ops = {n.op_type for n in _graph(outcomes["int8-dynamic"]).graph.node}
    assert {"QAttention", "MatMulInteger"} <= ops or {"QAttention", "DynamicQuantizeMatMul"} & ops


def test_fp16_keeps_layernorm_and_softmax_in_fp32_and_io_in_fp32(tiny_variant_builds):
    import onnx

    fp32, outcomes = _outcomes(tiny_variant_builds, "distilroberta-base")
    model = _graph(outcomes["fp16"])
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    fp16_initializers = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_initializers
    report = json.loads((outcomes["fp16"].bundle / "report.json").read_text())
    assert report["fp16_parity_method"]["engine"].startswith("onnxruntime")
    assert "LayerNormalization" in outcomes["fp16"].bundle.parent.joinpath("fp16", "manifest.json").read_text()


def test_a_variant_that_misses_its_gate_is_not_published(tiny_variant_builds, tmp_path):
    """An unreachable gate: the variant is reported with its margin and no bundle appears."""
    import shutil

    from distilrt.export.build import BuildResult

    fp32, _ = tiny_variant_builds["distilbert-base-cased-distilled-squad"]
    copy = tmp_path / fp32.bundle.parent.name / "fp32"
    shutil.copytree(fp32.bundle, copy)
    options = small_variant_options()
    impossible = {**options.gates, "fp16": Gate(None, qa_f1_vs_fp32=100.5, mlm_top1_vs_fp32=100.5)}
    from dataclasses import replace

    outcomes = build_variants(BuildResult(copy, fp32.manifest, 0.0), ("fp16",), replace(options, gates=impossible),
                              progress=lambda m: None)
    (outcome,) = outcomes
    assert not outcome.published and outcome.bundle is None
    margin = outcome.gate["margin"]
    assert margin == pytest.approx(outcome.gate["value"] - 100.5) and margin < 0
    assert "missed its gate" in outcome.reason and f"by {-margin:.2f}" in outcome.reason
    assert sorted(p.name for p in copy.parent.iterdir()) == ["fp32"]
