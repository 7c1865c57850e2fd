"""Reduced-precision graphs: fp16 and int8 (dynamic, and static Q/DQ calibrated on real data).

Every conversion is done by onnxruntime's own tools (transformers.float16, quantization); what is written by
hand here only works around their measured defects, each one commented.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from distilrt.errors import ExportError
from distilrt.export.build_log import Steps
from distilrt.export.config import PrecisionConfig
from distilrt.export.per_token_int8 import to_per_token
from distilrt.progress import Progress


def convert(config: PrecisionConfig, source: Path, target: Path,
            calibration_feeds: Iterable[Mapping[str, np.ndarray]] | None = None, work_dir: Path | None = None,
            progress: Progress | None = None) -> None:
    """Write ``source`` converted by ``config`` to ``target``. Static int8 with a ``work_dir`` keeps the prepared
    graph and the calibrated tensor ranges there, so that converting again with other float nodes (the accuracy
    search) skips the calibration."""
    if config.variant == "fp16":
        to_fp16(source, target, config)
    elif config.variant == "int8-dynamic":
        to_int8_dynamic(source, target, config)
    else:
        if calibration_feeds is None:
            raise ExportError(f"{config.variant} needs calibration inputs")
        to_int8_static(source, target, config, calibration_feeds, work_dir, progress)


def float_nodes(path: Path, config: PrecisionConfig) -> list[str]:
    """The nodes of ``op_types`` kept in float: the spec's patterns and the search's exact names."""
    return sorted(set(nodes_matching(path, config.keep_float)) | set(config.float_nodes))


def to_fp16(source: Path, target: Path, config: PrecisionConfig) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    ir_version = model.ir_version
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(config.keep_fp32))
    _drop_duplicate_nodes(model)
    # Keep the exporter's IR version: onnx 1.23 would write IR 14, which onnxruntime 1.31 cannot load.
    model.ir_version = ir_version
    onnx.save(model, str(target))


def _drop_duplicate_nodes(model) -> None:
    """convert_float_to_float16 inserts the same Cast twice where one fp32 tensor feeds two kept-fp32 ops of
    the exported attention (6 per DistilBERT graph, measured); ORT then refuses the duplicate names. The two
    nodes are byte-identical, so dropping the second changes nothing else."""
    seen: dict[tuple[str, ...], bytes] = {}
    kept = []
    for node in model.graph.node:
        key, body = tuple(node.output), node.SerializeToString()
        if key in seen:
            if seen[key] != body:
                raise ExportError(f"fp16 conversion produced two different nodes writing {list(key)}")
            continue
        seen[key] = body
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def to_int8_dynamic(source: Path, target: Path, config: PrecisionConfig) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        weight_type = QuantType.QUInt8 if config.weight_type == "uint8" else QuantType.QInt8
        quantize_dynamic(str(source), str(target), weight_type=weight_type, per_channel=config.per_channel,
                         op_types_to_quantize=list(config.op_types),
                         nodes_to_exclude=float_nodes(source, config),
                         # Without it the fused graph fails: "Unable to find data type for weight_name"
                         # (docs/design.md#quantization).
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    except Exception as e:
        raise ExportError(f"onnxruntime dynamic quantization failed on {source}: {e}") from e
    if config.activation_scales == "token":
        to_per_token(target)


# Calibration inputs whose activations are held in memory at once. onnxruntime's histogram calibrators keep
# every activation of every input until they build their histograms: 256 QA windows of 384 tokens of full-size
# DistilBERT is ~13 GB, which killed a 24 GiB build (measured). In chunks the histograms are merged instead.
CALIBRATION_CHUNK = 16


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds, readable in ranges (chunks)."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]], steps: Steps | None = None):
        self._feeds = [dict(feed) for feed in feeds]
        self._next = iter(self._feeds)
        self._steps = steps  # counts the inputs ONNX Runtime has run (calibration is minutes at full size)

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self):
        feed = next(self._next, None)
        if feed is not None and self._steps is not None:
            self._steps.advance()
        return feed

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._feeds[start_index:end_index])


def _chunk_size(count: int, largest: int = CALIBRATION_CHUNK) -> int:
    """The largest chunk up to ``largest`` that divides ``count`` (onnxruntime requires equal chunks)."""
    return max(size for size in range(1, min(largest, count) + 1) if count % size == 0)


def to_int8_static(source: Path, target: Path, config: PrecisionConfig,
                   calibration_feeds: Iterable[Mapping[str, np.ndarray]], work_dir: Path | None = None,
                   progress: Progress | None = None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    activation_type = QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8
    extra_options = {
        "ActivationSymmetric": config.symmetric,
        "WeightSymmetric": True,
        # One Q/DQ pair per consumer, so a Shape reading a quantized tensor is not tied to the MatMul's pair.
        "DedicatedQDQPair": True,
    }
    # Q/DQ on the MatMul inputs only (TensorRT's placement); the outputs stay float.
    extra_options["OpTypesToExcludeOutputQuantization"] = list(config.op_types)
    if config.percentile is not None:
        extra_options["CalibPercentile"] = config.percentile
    feeds = list(calibration_feeds)
    steps = Steps(progress, f"{config.variant}: calibrating ({config.calibration_method})", len(feeds), "inputs") \
        if progress is not None else None
    reader = _FeedReader(feeds, steps)
    # Despite its name, this option makes quantize_static calibrate in chunks with any method (quantize.py).
    extra_options["CalibStridedMinMax"] = _chunk_size(len(reader))
    with tempfile.TemporaryDirectory(prefix="distilrt-quant-") as scratch:
        kept = Path(work_dir) if work_dir is not None else Path(scratch)
        prepared = kept / "prepared.onnx"
        # The ranges depend on the graph, the method and the data, never on which nodes are excluded.
        cache = kept / f"ranges-{config.calibration_method}-{config.percentile}-{config.symmetric}.json"
        try:
            if not prepared.is_file():
                # Symbolic shape inference fails on these graphs and leaves large temp files behind
                # (docs/design.md#quantization).
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(target), reader, calibration_cache_path=str(cache),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(config.op_types),
                nodes_to_quantize=weighted_nodes(prepared, config.op_types),
                nodes_to_exclude=float_nodes(prepared, config),
                per_channel=config.per_channel, activation_type=activation_type, weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, config.calibration_method),
                calibration_providers=["CPUExecutionProvider"], extra_options=extra_options,
            )
        except Exception as e:
            raise ExportError(f"onnxruntime static quantization ({config.variant}) failed on {source}: {e}") from e
        finally:
            if steps is not None:
                steps.close()
    keep_other_consumers_float(target, config.op_types)


def keep_other_consumers_float(path: Path, op_types: tuple[str, ...]) -> None:
    """Give every consumer outside ``op_types`` the float tensor again.

    onnxruntime's quantizer gives ALL consumers of a quantized activation its Q/DQ copy, so the residual Add
    that reads the same LayerNorm output as the next MatMul would add an int8-rounded value; it has no option
    to limit that, hence this edit. With DedicatedQDQPair each consumer has its own pair, so the rewired
    consumer's pair is left unused and is removed.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    quantizer_of = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    dequantizer_of = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    for node in graph.node:
        if node.op_type in op_types or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            dequantizer = dequantizer_of.get(name)
            quantizer = quantizer_of.get(dequantizer.input[0]) if dequantizer is not None else None
            if quantizer is not None:  # an activation's pair (weights have no QuantizeLinear)
                node.input[index] = quantizer.input[0]
    _remove_unused(graph, ("QuantizeLinear", "DequantizeLinear"))
    onnx.save(model, str(path))


def _remove_unused(graph, op_types: tuple[str, ...]) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        unused = [n for n in graph.node if n.op_type in op_types and not used.intersection(n.output)]
        if not unused:
            return
        for node in unused:
            graph.node.remove(node)


def weighted_nodes(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """The linear layers: nodes of ``op_types`` whose second input is a weight (an initializer).

    Attention's activation x activation MatMuls (Q.K^T and probabilities.V) stay in float: static per-tensor
    int8 of softmax probabilities and scores cost 3-6 points of top-1 agreement on every stand-in (measured),
    while the dynamic path, which quantizes them per call, loses nothing."""
    import onnx

    return weighted_nodes_of(onnx.load(str(path), load_external_data=False).graph, op_types)


def weighted_nodes_of(graph, op_types: tuple[str, ...]) -> list[str]:
    """``weighted_nodes`` of an already loaded graph."""
    weights = {initializer.name for initializer in graph.initializer}
    return [node.name for node in graph.node
            if node.op_type in op_types and len(node.input) > 1 and node.input[1] in weights]


def nodes_matching(path: Path, patterns: tuple[str, ...]) -> list[str]:
    """Names of the graph's nodes that contain any of ``patterns``."""
    import onnx

    if not patterns:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if any(p in node.name for p in patterns)]


def op_histogram(path: Path) -> dict[str, int]:
    """Op types of a graph and their counts, for the report."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def fp16_cpu_method(path: Path) -> dict:
    """How ONNX Runtime's CPU provider really runs an fp16 graph, for the report.

    The CPU provider has fp16 kernels for few ops; for the others its graph transformer inserts Casts
    ("InsertedPrecisionFreeCast_*") that upcast their inputs, so those ops compute in fp32. A CPU check of an
    fp16 graph therefore measures fp16 storage and rounding, not fp16 arithmetic: that needs a GPU engine.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="distilrt-fp16-") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(optimized)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized), load_external_data=False).graph
    upcast_tensors = {out for node in graph.node if node.name.startswith("InsertedPrecisionFreeCast")
                      for out in node.output}
    upcast_ops = Counter(node.op_type for node in graph.node if upcast_tensors.intersection(node.input))
    return {
        "engine": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "computes_in_fp16": False,
        "ops_upcast_to_fp32": dict(upcast_ops.most_common()),
        "note": "weights and activations are rounded to fp16, but the listed ops run in fp32 on this CPU; "
                "fp16 arithmetic is checked only where a GPU engine verifies the bundle",
    }


def pad_to_common_length(feeds: list[Mapping[str, np.ndarray]], pad_token_id: int) -> list[dict[str, np.ndarray]]:
    """onnxruntime's histogram calibrators (Entropy, Percentile) stack the activations of every calibration
    input and fail on inputs of different lengths (measured: "inhomogeneous shape"); QA windows vary in length,
    and fill-mask inputs in their count of masked positions. Pad each input on the right to its longest as a
    batched runtime call does: pad id, attention mask 0, token type 0, mask position 0."""
    widths = {name: max(feed[name].shape[1] for feed in feeds) for name in feeds[0]}
    pad_values = {"input_ids": pad_token_id}
    return [{name: np.pad(array, ((0, 0), (0, widths[name] - array.shape[1])),
                          constant_values=pad_values.get(name, 0))
             for name, array in feed.items()} for feed in feeds]
