"""Per-token activation scales for dynamic int8: the rewrite that makes int8-dynamic batch-invariant.

ONNX Runtime's ``quantize_dynamic`` quantizes each activation with one scale and zero point per tensor
(DynamicQuantizeLinear, and QAttention inside), so padding and unrelated batch-mates change every row's
quantization and so its answer. Its maintainers declined per-row scales in the library (onnxruntime issues
#5672, #7037, #10111), so this module rewrites the graph ``quantize_dynamic`` wrote, from standard ONNX ops
(docs/design.md#batch-invariance):

- every DynamicQuantizeLinear(X) becomes a per-token quantizer: scale = max |X| over the hidden axis / 127
  (shape [..., 1]), and ONNX QuantizeLinear with one scale per row and zero point 128, so the uint8 codes 1..255
  hold -127..127. A row's codes and scale depend on the row alone. Symmetric around a fixed zero point because
  ORT's MatMulInteger kernels take only a scalar zero point for A; uint8 (not int8) because the u8 x u8 kernels
  cannot saturate on CPUs without VNNI (PrecisionConfig.weight_type).
- MatMulInteger -> Cast -> Mul(activation scale x weight scales) becomes one com.microsoft MatMulIntegerToFloat:
  the exact int32 product, the weights' per-column scales in the GEMM's epilogue, the row scales after it.
- QAttention (per-tensor by definition) becomes the same per-token product for the packed QKV projection, a Split
  into Q, K and V, and ONNX Runtime's fused MultiHeadAttention with the QKV bias and the same mask, so the
  attention core stays one fused op.

Everything else of the graph (per-channel weights, the fused LayerNorm and GELU ops) is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilrt.errors import ExportError

ZERO_POINT = 128  # the activations' fixed uint8 zero point: codes 1..255 hold -127..127
_CODE_RANGE = 127.0
# The smallest row scale: a row of zeros quantizes to the zero point instead of dividing by zero.
_MIN_SCALE = np.float32(1e-30)
_MS_DOMAIN = "com.microsoft"


def to_per_token(path: Path) -> dict[str, int]:
    """Rewrite the dynamic int8 graph at ``path`` in place to per-token activation scales; the counts of what was
    rewritten. ExportError if the graph holds a quantized op this rewrite does not know."""
    import onnx

    model = onnx.load(str(path))
    rewriter = _Rewriter(model.graph)
    counts = rewriter.run()
    if not any(opset.domain == _MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(_MS_DOMAIN, 1))
    onnx.save(model, str(path))
    return counts


class _Rewriter:
    """One pass over quantize_dynamic's nodes, in order: quantizers, products and attentions replaced in place."""

    def __init__(self, graph):
        self.graph = graph
        self.constants: dict[str, str] = {}
        self.row_scales: set[str] = set()  # the scale outputs of the per-token quantizers
        self.codes: set[str] = set()  # their uint8 outputs

    def run(self) -> dict[str, int]:
        counts = {"activations": 0, "matmuls": 0, "attentions": 0}
        nodes = list(self.graph.node)
        consumers: dict[str, list] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        replaced: set[int] = set()  # ids of nodes folded into a rewritten MatMulInteger
        rewritten = []
        for node in nodes:
            if id(node) in replaced:
                continue
            if node.op_type == "DynamicQuantizeLinear":
                rewritten += self._quantizer(node)
                counts["activations"] += 1
            elif node.op_type == "QAttention":
                rewritten += self._attention(node)
                counts["attentions"] += 1
            elif node.op_type == "MatMulInteger" and node.input[0] in self.codes:
                folded, new = self._matmul(node, consumers)
                replaced.update(id(n) for n in folded)
                rewritten += new
                counts["matmuls"] += 1
            elif node.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QOrderedAttention"):
                raise ExportError(f"per-token int8 cannot rewrite {node.op_type} ({node.name}): quantize with "
                                  "MatMulInteger and QAttention (op_types MatMul, Attention)")
            else:
                rewritten.append(node)
        rewritten = [n for n in rewritten if id(n) not in replaced]
        del self.graph.node[:]
        self.graph.node.extend(rewritten)
        return counts

    def _constant(self, name: str, value: np.ndarray) -> str:
        """A shared constant initializer (one per value)."""
        if name not in self.constants:
            from onnx import numpy_helper

            full = f"per_token_{name}"
            self.graph.initializer.append(numpy_helper.from_array(value, full))
            self.constants[name] = full
        return self.constants[name]

    def _quantizer(self, node) -> list:
        """DynamicQuantizeLinear(X) -> per-token uint8 codes, [..., 1] scales and the scalar zero point.

        max |X| per row from ReduceMax and ReduceMin (two read-only passes, where Abs would write a copy of X), then
        ONNX QuantizeLinear per axis 0 over X viewed as [rows, hidden]: divide, round half to even, add the zero
        point and saturate in one pass. QuantizeLinear-13 takes 1-D per-axis scales only, hence the 2-D view."""
        from onnx import TensorProto, helper

        x = node.input[0]
        codes, scale, zero_point_out = node.output
        base = node.name or codes
        inv_range = self._constant("inv_range", np.array(1.0 / _CODE_RANGE, np.float32))
        min_scale = self._constant("min_scale", np.array(_MIN_SCALE, np.float32))
        zero_point = self._constant("zero_point", np.array(ZERO_POINT, np.uint8))
        flat = self._constant("flat", np.array([-1], np.int64))

        def t(suffix):
            return f"{base}/per_token/{suffix}"

        self.row_scales.add(scale)
        self.codes.add(codes)
        return [
            helper.make_node("ReduceMax", [x], [t("max")], name=t("ReduceMax"), axes=[-1], keepdims=1),
            helper.make_node("ReduceMin", [x], [t("min")], name=t("ReduceMin"), axes=[-1], keepdims=1),
            helper.make_node("Abs", [t("max")], [t("abs_max")], name=t("AbsMax")),
            helper.make_node("Abs", [t("min")], [t("abs_min")], name=t("AbsMin")),
            helper.make_node("Max", [t("abs_max"), t("abs_min")], [t("absmax")], name=t("AbsOfRow")),
            helper.make_node("Mul", [t("absmax"), inv_range], [t("scale_raw")], name=t("Scale")),
            helper.make_node("Max", [t("scale_raw"), min_scale], [scale], name=t("ScaleFloor")),
            helper.make_node("Reshape", [scale, flat], [t("row_scales")], name=t("RowScales")),
            helper.make_node("Shape", [x], [t("shape")], name=t("Shape")),
            helper.make_node("Shape", [x], [t("hidden")], name=t("Hidden"), start=-1),
            helper.make_node("Concat", [flat, t("hidden")], [t("rows_by_hidden")], name=t("RowsByHidden"), axis=0),
            helper.make_node("Shape", [t("row_scales")], [t("rows")], name=t("Rows")),
            helper.make_node("ConstantOfShape", [t("rows")], [t("row_zero_points")], name=t("RowZeroPoints"),
                             value=helper.make_tensor("value", TensorProto.UINT8, [1], [ZERO_POINT])),
            helper.make_node("Reshape", [x, t("rows_by_hidden")], [t("x_rows")], name=t("Rows2D")),
            helper.make_node("QuantizeLinear", [t("x_rows"), t("row_scales"), t("row_zero_points")], [t("codes_2d")],
                             name=t("QuantizeLinear"), axis=0),
            helper.make_node("Reshape", [t("codes_2d"), t("shape")], [codes], name=t("Codes")),
            helper.make_node("Identity", [zero_point], [zero_point_out], name=t("ZeroPoint")),
        ]

    def _matmul(self, node, consumers) -> tuple[list, list]:
        """MatMulInteger -> Cast -> Mul(Mul(activation scale, weight scales)) becomes one
        MatMulIntegerToFloat(a_scale = the [..., 1] row scales, b_scale = the weights' column scales). Returns (the
        nodes folded away, the new nodes)."""

        cast = self._only_consumer(node.output[0], consumers, "Cast")
        output_mul = self._only_consumer(cast.output[0], consumers, "Mul")
        product_name = output_mul.input[1] if output_mul.input[0] == cast.output[0] else output_mul.input[0]
        product = next((n for n in self.graph.node if product_name in n.output and n.op_type == "Mul"), None)
        if product is None or not self.row_scales.intersection(product.input):
            raise ExportError(f"per-token int8: unexpected output scaling after {node.name}")
        row_scale, weight_scale = product.input if product.input[0] in self.row_scales else product.input[::-1]
        codes, weight, zero_point, weight_zero_point = (list(node.input) + ["", ""])[:4]
        return [cast, output_mul, product], [
            _product(codes, weight, row_scale, weight_scale, zero_point, weight_zero_point, list(output_mul.output),
                     f"{node.name or node.output[0]}/per_token/MatMulIntegerToFloat")]

    @staticmethod
    def _only_consumer(name: str, consumers, op_type: str):
        readers = consumers.get(name, [])
        if len(readers) != 1 or readers[0].op_type != op_type:
            raise ExportError(f"per-token int8: expected {name} to be read by one {op_type}, found "
                              f"{[n.op_type for n in readers]}")
        return readers[0]

    def _attention(self, node) -> list:
        """QAttention -> per-token MatMulInteger for QKV, Split, MultiHeadAttention (fp32 core, same mask)."""
        from onnx import helper

        inputs = list(node.input) + [""] * (9 - len(node.input))
        codes, weight, bias, row_scale, weight_scale, mask_index, zero_point, weight_zero_point, past = inputs
        if past:
            raise ExportError(f"per-token int8: QAttention {node.name} has a past state (decoder graphs are not "
                              "supported)")
        if row_scale not in self.row_scales:
            raise ExportError(f"per-token int8: QAttention {node.name} reads an activation that is not quantized "
                              "by a DynamicQuantizeLinear")
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        unknown = set(attributes) - {"num_heads", "mask_filter_value"}
        if unknown or attributes.get("unidirectional", 0):
            raise ExportError(f"per-token int8: QAttention {node.name} has attributes {sorted(unknown)} that "
                              "MultiHeadAttention does not take")
        hidden = self._columns(weight) // 3
        base = node.name or node.output[0]

        def t(suffix):
            return f"{base}/per_token/{suffix}"

        split_sizes = self._constant(f"qkv_split_{hidden}", np.array([hidden] * 3, np.int64))
        mha_attributes = {"num_heads": attributes["num_heads"]}
        if "mask_filter_value" in attributes:
            mha_attributes["mask_filter_value"] = attributes["mask_filter_value"]
        return [
            _product(codes, weight, row_scale, weight_scale, zero_point, weight_zero_point, [t("qkv")],
                     t("MatMulIntegerToFloat")),
            helper.make_node("Split", [t("qkv"), split_sizes], [t("q"), t("k"), t("v")], name=t("Split"), axis=-1),
            helper.make_node("MultiHeadAttention", [t("q"), t("k"), t("v"), bias, mask_index], list(node.output),
                             name=t("MultiHeadAttention"), domain=_MS_DOMAIN, **mha_attributes),
        ]

    def _columns(self, initializer_name: str) -> int:
        for initializer in self.graph.initializer:
            if initializer.name == initializer_name:
                return int(initializer.dims[-1])
        raise ExportError(f"per-token int8: weight {initializer_name} is not an initializer")


def _product(codes: str, weight: str, row_scale: str, weight_scale: str, zero_point: str, weight_zero_point: str,
             outputs: list[str], name: str):
    """A per-token int8 product: exact int32 sums of (codes - 128) x (weights - their zero points), times the
    weights' column scales in the GEMM's epilogue, then times the [..., 1] row scales. MatMulIntegerToFloat takes
    a per-row A scale of shape [..., M, 1] by design (onnxruntime contrib_ops/cpu/quantization/
    dynamic_quantize_matmul.cc: FixupScaleTensor, then ScaleOutput in place). No bias input: the GEMM adds the
    bias before that row scaling, so the graph's own bias ops stay after the product."""
    from onnx import helper

    return helper.make_node("MatMulIntegerToFloat", [codes, weight, row_scale, weight_scale, zero_point,
                                                     weight_zero_point], outputs, name=name, domain=_MS_DOMAIN)
