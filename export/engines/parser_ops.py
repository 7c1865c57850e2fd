"""What TensorRT's ONNX parser accepts, as data: its operators, its opset range and its tensor types.

Source: repository onnx/onnx-tensorrt, file docs/operators.md, the version headed "TensorRT 10.15 supports
operators in the inclusive range of opset 9 to opset 24" (the TensorRT 10.15 GA release of 2026-02-02 in
docs/Changelog.md; the newest version in the index it was read from, which does not record that version's
commit), https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md. TensorRT 11's own documentation
(https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/onnx-opset-guide.html) points to that same
file as the parser's operator list, and its 11.5 release notes add opset 25; the range below stays at the
documented 9-24, which every TensorRT 11 release parses.

Written out by hand because no installable library exposes the parser's operator list: only TensorRT itself
can answer (``OnnxParser.supports_model``), and full TensorRT cannot be installed here or in CI
(docs/design.md#tensorrt-on-these-machines); ``tensorrt_lean`` has no ONNX parser. When TensorRT is upgraded,
read the file again and update this one.
"""

from __future__ import annotations

TENSORRT_VERSION = "10.15 (onnx-tensorrt docs/operators.md; referenced by the TensorRT 11.x documentation)"
SOURCE_URL = "https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md"

# "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24."
MIN_OPSET = 9
MAX_OPSET = 24

# Rows marked "Y" in the operator support matrix.
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv",
    "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU",
    "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler",
    "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not",
    "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RMSNormalization", "RNN", "RoiAlign",
    "RotaryEmbedding", "Round", "STFT", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu",
    "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "TensorScatter", "ThresholdedRelu",
    "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

# Rows marked "N": standard ONNX operators the parser refuses.
UNSUPPORTED_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence",
    "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})

# Standard ONNX, refused by the parser, and exactly what ONNX Runtime's integer (CPU) quantization emits; the
# TensorRT form of int8 is explicit QuantizeLinear/DequantizeLinear.
ORT_INTEGER_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv"})

# "TensorRT supports the following ONNX data types: DOUBLE, FLOAT32, FLOAT16, BFLOAT16, FP8, FP4, INT32, INT64,
# INT8, INT4, UINT8, and BOOL", with two notes: DOUBLE has "limited support" (cast down to FLOAT, clamped), and
# "UINT8 is only supported as network input or output tensor types". Names are onnx.TensorProto's.
SUPPORTED_TENSOR_TYPES = frozenset({
    "FLOAT", "FLOAT16", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT4E2M1", "INT32", "INT64", "INT8", "INT4", "BOOL",
})
IO_ONLY_TENSOR_TYPES = frozenset({"UINT8"})
