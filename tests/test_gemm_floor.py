"""The int8 GEMM floor: which layers of a graph are int8 linear layers, a floor graph with exactly their products
(fused by ONNX Runtime as the bundle's are), and its place in the bench record and the report. Figures are not
checked: speed is never unit-tested."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import QA_CHECKPOINTS
from onnx import TensorProto, helper, numpy_helper

from distilrt.bench.gemm_floor import Timing, floor_model, linear_layers, measure_floor
from distilrt.errors import UserInputError

QUICK = Timing(threads=1, warmup=0, repeats=2, max_seconds=5.0, min_runs=1)
FLOOR_KEYS = {"latency_ms", "repeats", "int8_gemms", "gmacs", "gmacs_per_s", "threads", "form"}


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(array, name)


def _mixed_graph(path: Path) -> Path:
    """Every form an int8 bundle holds its linear layers in, next to what is not an int8 linear layer:
    QAttention (8 -> 24), MatMulInteger (8 -> 16, per channel), Q/DQ MatMul (16 -> 8, per tensor), a float
    MatMul with a weight (8 -> 2) and an activation MatMul (no weight)."""
    h = 8
    int8 = lambda *shape: np.ones(shape, np.int8)  # noqa: E731
    f32 = lambda *shape: np.ones(shape, np.float32)  # noqa: E731
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("QAttention", ["xq", "qkv_w", "qkv_b", "xs", "qkv_ws", "", "xz", "qkv_wz"], ["attn"],
                         domain="com.microsoft", num_heads=2, name="qattention"),
        helper.make_node("MatMulInteger", ["xq", "up_w", "xz", "up_wz"], ["up_int"], name="up"),
        helper.make_node("Cast", ["up_int"], ["up"], to=TensorProto.FLOAT),
        helper.make_node("QuantizeLinear", ["up", "a_s", "a_z"], ["up_q"]),
        helper.make_node("DequantizeLinear", ["up_q", "a_s", "a_z"], ["up_dq"]),
        helper.make_node("DequantizeLinear", ["down_w", "down_ws", "down_wz"], ["down_w_dq"]),
        helper.make_node("MatMul", ["up_dq", "down_w_dq"], ["down"], name="down"),
        helper.make_node("MatMul", ["down", "head_w"], ["head"], name="head"),
        helper.make_node("MatMul", ["attn", "attn_t"], ["scores"], name="activation_product"),
    ]
    initializers = [
        _init("qkv_w", int8(h, 3 * h)), _init("qkv_b", f32(3 * h)), _init("qkv_ws", f32(3 * h)),
        _init("qkv_wz", int8(3 * h)), _init("up_w", int8(h, 2 * h)), _init("up_wz", int8(2 * h)),
        _init("a_s", np.float32(0.1)), _init("a_z", np.uint8(128)), _init("down_w", int8(2 * h, h)),
        _init("down_ws", np.float32(0.1)), _init("down_wz", np.int8(0)), _init("head_w", f32(h, 2)),
    ]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, h]),
                                               helper.make_tensor_value_info("attn_t", TensorProto.FLOAT, [h, 4])],
                              [helper.make_tensor_value_info("head", TensorProto.FLOAT, [4, 2]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 4])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(path))
    return path


def test_linear_layers_reads_every_int8_form_and_counts_float_ones(tmp_path):
    layers, float_layers = linear_layers(_mixed_graph(tmp_path / "mixed.onnx"))
    assert [(layer.node, layer.k, layer.n, layer.per_channel) for layer in layers] == [
        ("qattention", 8, 24, True), ("up", 8, 16, True), ("down", 16, 8, False)]
    assert float_layers == 1  # the head; the activation product has no weight


def test_the_floor_graph_holds_exactly_those_products_and_onnxruntime_fuses_them(tmp_path):
    layers, _ = linear_layers(_mixed_graph(tmp_path / "mixed.onnx"))
    model = floor_model(layers, rows=6)
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    products = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    assert [weights[n.input[1]] for n in products] == [(layer.k, layer.n) for layer in layers]
    assert [tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input] == \
        [(6, layer.k) for layer in layers]
    assert collections.Counter(n.op_type for n in model.graph.node) == {
        "DynamicQuantizeLinear": 3, "MatMulInteger": 3, "Cast": 3, "Mul": 6}
    # ONNX Runtime runs it with the kernel it runs the bundles' layers with.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph.node
    assert collections.Counter(n.op_type for n in optimized) == {"DynamicQuantizeMatMul": 3}


def test_a_model_without_int8_layers_has_no_floor():
    with pytest.raises(UserInputError, match="no int8 linear layer"):
        floor_model([], rows=4)


def test_the_floor_runs_and_reports_its_work(tmp_path):
    layers, _ = linear_layers(_mixed_graph(tmp_path / "mixed.onnx"))
    floor = measure_floor(layers, batch=2, sequence=3, timing=QUICK)
    assert set(floor) == FLOOR_KEYS
    assert floor["int8_gemms"] == 3 and floor["threads"] == 1 and floor["repeats"] == 2
    assert floor["gmacs"] == pytest.approx(6 * (8 * 24 + 8 * 16 + 16 * 8) / 1e9)


def _distilbert_linear_shapes(config: dict, fused_attention: bool) -> collections.Counter:
    """The linear layers of a DistilBERT encoder from its config alone (not from the ONNX)."""
    layers, hidden, ffn = config["n_layers"], config["dim"], config["hidden_dim"]
    attention = {(hidden, 3 * hidden): layers} if fused_attention else {(hidden, hidden): 3 * layers}
    shapes = collections.Counter(attention)
    shapes.update({(hidden, hidden): layers, (hidden, ffn): layers, (ffn, hidden): layers})
    return shapes


def test_a_tiny_int8_bundle_floor_matches_its_encoder_and_lands_in_the_bench_record(tiny_variant_builds, tiny_checkpoints,
                                                                                    tmp_path):
    from distilrt.bench.report import build_report, render_markdown
    from distilrt.bench.runner import BenchConfig, bench_bundles

    name = QA_CHECKPOINTS[0]
    fp32, outcomes = tiny_variant_builds[name]
    int8 = next(o for o in outcomes if o.variant == "int8-dynamic")
    if not int8.published:
        pytest.skip(f"{name} int8-dynamic was not published: {int8.reason}")
    config = json.loads((tiny_checkpoints[name] / "config.json").read_text())
    layers, float_layers = linear_layers(int8.bundle / "model.onnx")
    assert collections.Counter((layer.k, layer.n) for layer in layers) == \
        _distilbert_linear_shapes(config, fused_attention=True)
    assert all(layer.per_channel for layer in layers) and float_layers == 1  # the QA head

    bench = bench_bundles([fp32.bundle, int8.bundle], BenchConfig(
        batches=(1,), sequences=(16,), warmup=0, repeats=2, threads=1, modes=("model",), references=()),
        progress=lambda message: None)
    rows = {r["variant"]: r for r in bench["results"]}
    assert "gemm_floor" not in rows["fp32"]
    floor = rows["int8-dynamic"]["gemm_floor"]
    assert FLOOR_KEYS | {"float_linear_layers", "model_p50_ms", "efficiency"} == set(floor)
    assert floor["int8_gemms"] == len(layers) and floor["threads"] == 1 and floor["float_linear_layers"] == 1
    assert floor["model_p50_ms"] == rows["int8-dynamic"]["latency_ms"]["p50"]
    assert floor["efficiency"] == pytest.approx(floor["latency_ms"]["p50"] / floor["model_p50_ms"])

    markdown = render_markdown(build_report([bench]))
    assert "### int8 GEMM floor" in markdown
    assert f"| int8-dynamic | 1 | 16 | {floor['latency_ms']['p50']:.2f} | {floor['model_p50_ms']:.2f} | " \
           f"{floor['efficiency']:.0%} | {len(layers)} | 1 |" in markdown
