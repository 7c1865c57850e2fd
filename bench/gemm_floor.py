"""The int8 GEMM floor: the least time an int8 bundle's matrix products alone take on this CPU, measured with
ONNX Runtime in the same `distilrt bench` run, so that a model-only latency reads as a fraction of it
("efficiency" = floor / model p50; the issue's target: DistilBERT-QA b1 s384 int8 at 80% or more).

The floor graph holds, for every int8 linear layer of the bundle (its weight shapes, K x N, read from its ONNX;
a fused QAttention's QKV projection is one K x 3H product), DynamicQuantizeLinear -> MatMulInteger -> Cast ->
Mul(scale) on M = batch x sequence rows, with random weights of the bundle's type (int8 or uint8): the op
form ONNX Runtime's dynamic quantization writes, which the session fuses into DynamicQuantizeMatMul exactly as it
does in the bundle. No attention, LayerNorm, GELU, embedding, nor the layers left in float: only the int8
products. Each layer gets its own input name (bound to one shared buffer per width), so ONNX Runtime cannot merge
the quantization of equal inputs, and inputs and outputs are bound once (IOBinding), so a timed run is the
kernels alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilrt.bench.worker import latency_figures, time_calls
from distilrt.errors import BackendError, CapabilityError, DistilrtError, UserInputError, one_line

FORM = "DynamicQuantizeLinear + MatMulInteger + Cast + Mul per int8 linear layer (ORT fuses: DynamicQuantizeMatMul)"
FLOOR_OPSET = 17
FLOOR_IR_VERSION = 8  # what every ONNX Runtime since 1.10 loads
_INT8_TYPES = (2, 3)  # onnx.TensorProto.UINT8, INT8


@dataclass(frozen=True)
class LinearLayer:
    """One int8 matrix product of a bundle: its node and weight shape (K inputs x N outputs)."""

    node: str
    k: int
    n: int
    per_channel: bool  # one weight scale and zero point per output column, as the bundle has
    # uint8 weights run ONNX Runtime's u8 x u8 kernels, int8 weights its u8 x s8 kernels (VNNI where the CPU has it)
    unsigned: bool = False


@dataclass(frozen=True)
class Timing:
    """How the floor is timed: the bench's own threads and repeats policy."""

    threads: int
    warmup: int
    repeats: int
    max_seconds: float
    min_runs: int


def linear_layers(model_path: Path) -> tuple[list[LinearLayer], int]:
    """The int8 linear layers of an ONNX model and how many linear layers (a 2-D float weight) stayed float.

    Read: MatMulInteger, DynamicQuantizeMatMul and MatMulIntegerToFloat (weight input 1), QAttention (input 1),
    QLinearMatMul (input 3), and a MatMul whose weight comes from DequantizeLinear of an int8 initializer (Q/DQ).
    """
    onnx = _import_onnx()
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    weight_input = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QAttention": 1,
                    "QLinearMatMul": 3}
    layers, float_layers = [], 0
    for node in graph.node:
        if node.op_type in weight_input:
            weight = initializers.get(node.input[weight_input[node.op_type]])
            zero_point = _zero_point(node, initializers)
        elif node.op_type == "MatMul" and len(node.input) == 2:
            weight = initializers.get(node.input[1])
            if weight is not None and weight.data_type not in _INT8_TYPES and len(weight.dims) == 2:
                float_layers += 1  # a linear layer left in float (the task head, or one the int8 search kept)
                continue
            dequantize = producers.get(node.input[1])
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue  # attention's activation products: no weight
            weight = initializers.get(dequantize.input[0])
            zero_point = initializers.get(dequantize.input[2]) if len(dequantize.input) > 2 else None
        else:
            continue
        if weight is None or weight.data_type not in _INT8_TYPES or len(weight.dims) != 2:
            continue
        per_channel = zero_point is not None and len(zero_point.dims) == 1 and zero_point.dims[0] > 1
        layers.append(LinearLayer(node.name, int(weight.dims[0]), int(weight.dims[1]), per_channel,
                                  unsigned=weight.data_type == onnx.TensorProto.UINT8))
    return layers, float_layers


def _zero_point(node, initializers):
    """The weight zero point's initializer of an integer op (its position differs by op)."""
    index = {"MatMulInteger": 3, "DynamicQuantizeMatMul": 3, "MatMulIntegerToFloat": 5, "QAttention": 7,
             "QLinearMatMul": 5}[node.op_type]
    return initializers.get(node.input[index]) if len(node.input) > index and node.input[index] else None


def floor_model(layers: list[LinearLayer], rows: int, seed: int = 0):
    """The floor graph (an onnx ModelProto) of ``layers`` on ``rows`` = batch x sequence rows."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if not layers:
        raise UserInputError("the model has no int8 linear layer, so it has no int8 GEMM floor")
    rng = np.random.default_rng(seed)
    nodes, inputs, outputs, initializers = [], [], [], []
    for i, layer in enumerate(layers):
        channels = layer.n if layer.per_channel else 1
        shape = [layer.n] if layer.per_channel else []
        dtype = np.uint8 if layer.unsigned else np.int8
        zero = 128 if layer.unsigned else 0
        weight = rng.integers(zero - 127, zero + 128, size=(layer.k, layer.n), dtype=dtype)
        scale = rng.uniform(0.001, 0.01, size=channels).astype(np.float32).reshape(shape)
        initializers += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(scale, f"w{i}_scale"),
                         numpy_helper.from_array(np.full(shape, zero, dtype=dtype), f"w{i}_zero_point")]
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [rows, layer.k]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [rows, layer.n]))
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [f"x{i}"], [f"x{i}_q", f"x{i}_scale", f"x{i}_zero_point"]),
            helper.make_node("Mul", [f"x{i}_scale", f"w{i}_scale"], [f"s{i}"]),
            helper.make_node("MatMulInteger", [f"x{i}_q", f"w{i}", f"x{i}_zero_point", f"w{i}_zero_point"],
                             [f"p{i}"], name=f"floor_{layer.node or i}"),
            helper.make_node("Cast", [f"p{i}"], [f"p{i}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"p{i}_float", f"s{i}"], [f"y{i}"]),
        ]
    graph = helper.make_graph(nodes, "int8_gemm_floor", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", FLOOR_OPSET)])
    model.ir_version = FLOOR_IR_VERSION
    onnx.checker.check_model(model)
    return model


def measure_floor(layers: list[LinearLayer], batch: int, sequence: int, timing: Timing, seed: int = 0) -> dict:
    """Time the floor graph of ``layers`` at (batch, sequence) with the bench's threads and repeats policy."""
    ort = _import_onnxruntime()
    rows = batch * sequence
    model = floor_model(layers, rows, seed)
    options = ort.SessionOptions()
    options.intra_op_num_threads = timing.threads  # set, as the bench sets it for every runner
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(seed)
        shared = {}  # one input buffer per width: the same data every layer of that width reads
        binding = session.io_binding()
        for i, layer in enumerate(layers):
            if layer.k not in shared:
                shared[layer.k] = ort.OrtValue.ortvalue_from_numpy(
                    rng.standard_normal((rows, layer.k), dtype=np.float32))
            binding.bind_ortvalue_input(f"x{i}", shared[layer.k])
            binding.bind_ortvalue_output(f"y{i}", ort.OrtValue.ortvalue_from_numpy(
                np.empty((rows, layer.n), np.float32)))
        times = time_calls(lambda: session.run_with_iobinding(binding), timing.warmup, timing.repeats,
                           timing.max_seconds, timing.min_runs)
    except Exception as e:  # onnxruntime raises its own untyped exceptions (e.g. out of memory at large cells)
        raise BackendError(f"onnxruntime could not run the int8 GEMM floor at batch {batch} sequence {sequence}: "
                           f"{one_line(e)}") from e
    macs = rows * sum(layer.k * layer.n for layer in layers)
    figures = latency_figures(times, batch)
    return {"latency_ms": figures["latency_ms"], "repeats": figures["repeats"], "int8_gemms": len(layers),
            "gmacs": macs / 1e9, "gmacs_per_s": macs / 1e9 / (figures["latency_ms"]["p50"] / 1000.0),
            "threads": timing.threads, "form": FORM}


def add_gemm_floors(results: list[dict], bundles, timing: Timing, seed: int = 0, progress=None) -> None:
    """Give every measured model-only row of an int8 ONNX Runtime bundle its ``gemm_floor``: the floor's figures,
    the row's p50 and efficiency = floor p50 / model p50; or the reason there is none. Equal layer shapes at an
    equal cell are measured once."""
    measured: dict[tuple, dict] = {}
    for bundle in bundles:
        manifest = bundle.manifest
        if manifest.model.get("precision") != "int8" or not manifest.model_file.backend.startswith("onnxruntime"):
            continue
        rows = [r for r in results if r["runner"] == "distilrt" and r["bundle"] == str(bundle.path)
                and r["mode"] == "model" and r["latency_ms"]]
        if not rows:
            continue
        try:
            layers, float_layers = linear_layers(bundle.onnx_path)
        except DistilrtError as e:
            for row in rows:
                row["gemm_floor"] = {"skipped_reason": one_line(e)}
            continue
        for row in rows:
            key = (tuple((layer.k, layer.n, layer.per_channel) for layer in layers), row["batch"], row["sequence"])
            if key not in measured:
                if progress is not None:
                    progress(f"{row['checkpoint']}/{row['variant']}: int8 GEMM floor, batch {row['batch']} sequence "
                             f"{row['sequence']} ({len(layers)} products)")
                try:
                    measured[key] = measure_floor(layers, row["batch"], row["sequence"], timing, seed)
                except DistilrtError as e:
                    measured[key] = {"skipped_reason": one_line(e)}
            floor = measured[key]
            if "skipped_reason" in floor:
                row["gemm_floor"] = dict(floor)
                continue
            model_p50 = row["latency_ms"]["p50"]
            row["gemm_floor"] = {**floor, "float_linear_layers": float_layers, "model_p50_ms": model_p50,
                                 "efficiency": floor["latency_ms"]["p50"] / model_p50}


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise CapabilityError(f"the int8 GEMM floor builds its graph with the onnx package ({e}): "
                              "pip install distilrt[export]") from e
    return onnx


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise CapabilityError(f"the int8 GEMM floor runs on ONNX Runtime ({e}): pip install distilrt[ort]") from e
    return onnxruntime
