"""ONNX operator support lists that the graph linter checks exported models against.

Sources, each a stored copy of the public file:

- TensorRT: onnx/onnx-tensorrt ``docs/operators.md`` at commit fa5aa9f61e77, the TensorRT 10.15 matrix
  (opsets 9 to 24; 10.15 GA, 2026-02-02). Only rows marked "Y".
- OpenVINO: openvinotoolkit/openvino ``src/frontends/onnx/docs/supported_ops.md`` at commit 0ae60f0ffec9 (covers
  up to opset 23). Default-domain rows that name a supported version.
- ONNX Runtime: the default-domain schemas of the installed ``onnx`` up to opset 21.
- NPU: a conservative subset of airockchip/rknn-toolkit2 ``doc/RKNNToolKit2_OP_Support-v2.1.0.md`` at commit
  deaba85fc437 (opset 19): the conv, pool, elementwise, activation and static reshape ops that edge NPU compilers
  generally lower to hardware, compared against nxp-imx/ethos-u-vela ``SUPPORTED_OPS.md`` (Vela 3.6.1) and the
  Coral Edge TPU supported-ops table. Shape, Gather and ConstantOfShape are left out: they mean a dynamic graph.
- ncnn: the ONNX ops that pnnx 20261020 (Tencent/ncnn ``tools/pnnx``: ``src/pass_level2/*.cpp``, the ``*_onnx``
  patterns, and ``src/pass_ncnn/*.cpp``) turns into ncnn layers (ncnn ``docs/developer-guide/operators.md``),
  checked with the installed converter and runtime on every graph of ``reports/ncnn/`` (a row says why where the
  lint and the runtime disagree). ncnn's blobs are at most 4-D (w, h, d, c) and have no batch axis: pnnx drops a
  leading size 1, and refuses a concat, split or slice along it ("cat along batch axis 0 is not supported").
- OpenCV: opencv/opencv ``modules/dnn/src/onnx/onnx_importer2.cpp`` at commit 011ef8525d51 (the 5.x importer):
  the ops of ``buildDispatchMap_ONNX_AI`` and ``buildDispatchMap_COM_MICROSOFT``; plus the ops that
  opencv-python 5.1.0's importer loaded as one-node models here (``readNetFromONNX`` gave a non-empty net), and
  com.microsoft MultiHeadAttention, which it ran against onnxruntime (max abs 6e-08).
- onnx: the ONNX standard itself, the default domain, for the portable file ``export --target onnx`` writes.
"""

from onnx.defs import get_all_schemas_with_history

# All default-domain ONNX ops up to opset 21 (ai.onnx.ml is not needed), and opset 23's Attention, which
# onnxruntime 1.32's CPU provider runs (checked against a NumPy reference, 3-D and 4-D inputs, with a float mask).
ONNXRUNTIME: frozenset[str] = frozenset(
    s.name for s in get_all_schemas_with_history() if s.domain == "" and s.since_version <= 21
) | {"Attention"}

# OpenVINO ONNX frontend, src/frontends/onnx/docs/supported_ops.md @ 0ae60f0ffec990b581cf29cae47563090e5deca0.
OPENVINO: frozenset[str] = frozenset({
    "ATen", "Abs", "Acos", "Acosh", "Add", "Affine", "AffineGrid", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
    "Atanh", "Attention", "AveragePool", "BatchNormalization", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "CenterCropPad", "Clip", "Col2Im", "Compress",
    "Concat", "ConcatFromSequence", "Constant", "ConstantFill", "ConstantOfShape", "Conv", "ConvInteger",
    "ConvTranspose", "Cos", "Cosh", "Crop", "CumSum", "DFT", "DepthToSpace", "DequantizeLinear", "Div", "Dropout",
    "DynamicQuantizeLinear", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU",
    "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool",
    "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "HammingWindow", "HannWindow", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsFinite", "IsInf", "IsNaN",
    "LRN", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
    "LpNormalization", "MatMul", "MatMulInteger", "Max", "MaxPool", "MaxRoiPool", "Mean", "MeanVarianceNormalization",
    "Min", "Mish", "Mod", "Mul", "Multinomial", "Neg", "NegativeLogLikelihoodLoss", "NonMaxSuppression", "NonZero",
    "Not", "OneHot", "Or", "PRelu", "Pad", "Pow", "QLinearConv", "QLinearMatMul", "QuantizeLinear", "RMSNormalization",
    "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "RotaryEmbedding", "Round", "STFT",
    "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "Shape", "Shrink", "Sigmoid", "Sign",
    "SimplifiedLayerNormalization", "Sin", "Sinh", "Size", "Slice", "Softmax", "SoftmaxCrossEntropyLoss", "Softplus",
    "Softsign", "SpaceToDepth", "Split", "SplitToSequence", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unique", "Unsqueeze", "Upsample", "Where", "Xor",
})

# onnx-tensorrt docs/operators.md @ fa5aa9f61e7781d2ca8f5351d42c1f19525a6124 (TensorRT 10.15), rows marked "Y".
TENSORRT: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten",
    "Floor", "GRU", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "HammingWindow", "HannWindow",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN",
    "LRN", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
    "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod",
    "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "PRelu", "Pad", "ParametricSoftplus", "Pow",
    "QuantizeLinear", "RMSNormalization", "RNN", "RandomNormal", "RandomNormalLike", "RandomUniform",
    "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize",
    "ReverseSequence", "RoiAlign", "RotaryEmbedding", "Round", "STFT", "ScaledTanh", "Scan", "Scatter",
    "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice",
    "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "TensorScatter", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})

# RKNN-Toolkit2 v2.1.0 ONNX op list, conservative subset. Abs and Neg are "Not Supported" there but kept: Vela maps
# ABS and TFLite delegates (Arm NN) map ABS/NEG; Neg also folds into Mul by -1. Div, Pow, Sqrt, Exp, Erf, Transpose,
# HardSigmoid, ReduceSum and ReduceMax are on RKNN's list but missing from Vela 3.6.1's table, the Edge TPU's, or
# both, so those targets may run them on the CPU; they stay because attention blocks are built from them.
NPU: frozenset[str] = frozenset({
    "Abs", "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv", "ConvTranspose", "Div",
    "Erf", "Exp", "Flatten", "Gemm", "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu", "MatMul",
    "Max", "MaxPool", "Min", "Mul", "Neg", "PRelu", "Pad", "Pow", "ReduceMax", "ReduceMean", "ReduceSum", "Relu",
    "Reshape", "Resize", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose",
    "Unsqueeze",
})

# pnnx's ONNX patterns with an ncnn layer behind them. Left out: comparisons and logic (Equal, Greater, Less, Not,
# And, Or, Where: ncnn's BinaryOp has none), TopK, NonZero, ScatterND, GatherElements, GatherND, Range,
# ConstantOfShape, NonMaxSuppression, RoiAlign, Tile (pnnx emits torch.tile, which ncnn has no layer for), and Shape,
# Size and Expand, which pnnx only folds at a fixed shape (the static-export checks name those). Gather is kept for
# constant indices. scripts/ncnn_op_probe.py runs ops one at a time (reports/ncnn/ops.md): some on the list are
# mis-converted there without a warning (a reduction or softmax over the channel axis of the graph input, a gather
# along axis 1, a flip), which no op list can tell; parity in ncnn is the check.
NCNN: frozenset[str] = frozenset({
    "Abs", "Acos", "Add", "Asin", "Atan", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "Conv", "ConvTranspose", "Cos", "DepthToSpace", "Div", "Dropout", "Elu", "Erf", "Exp", "Flatten",
    "Floor", "GRU", "Gather", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "GridSample", "GroupNormalization",
    "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "LRN", "LSTM", "LayerNormalization", "LeakyRelu",
    "Log", "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mish", "Mod", "Mul", "Neg", "PRelu", "Pad", "Pow", "RNN",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "Round", "Selu", "Sigmoid", "Sin", "Slice", "Softmax",
    "Softplus", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "Transpose",
    "Unsqueeze", "Upsample",
})

# OpenCV DNN's ONNX importer, modules/dnn/src/onnx/onnx_importer2.cpp @ 011ef8525d518f760c6aa673b96af5f67a2a3a90.
OPENCV: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantFill",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div",
    "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "GRU", "Gather", "GatherElements",
    "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GroupNormalization",
    "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler", "InstanceNormalization", "LRN", "LSTM",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "MatMul", "Max", "MaxPool",
    "MaxUnpool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "PRelu", "Pad", "Pow", "QuantizeLinear", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "Round", "Scatter", "ScatterElements",
    "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Slice", "Softmax", "Softplus",
    "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile",
    "Transpose", "Unsqueeze", "Upsample", "Where", "Xor",
}) | frozenset({  # loaded by opencv-python 5.1.0 as one-node models
    "AffineGrid", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "BlackmanWindow", "DFT", "Det",
    "DynamicQuantizeLinear", "EyeLike", "GatherND", "GridSample", "HammingWindow", "HannWindow", "Hardmax", "IsInf",
    "IsNaN", "LpNormalization", "LpPool", "Mish", "NonMaxSuppression", "NonZero", "OneHot", "RNN", "RoiAlign", "Size",
    "TopK", "Trilu", "Unique",
})

# RKNN-Toolkit2's own ONNX list, airockchip/rknn-toolkit2 ``doc/RKNNToolKit2_OP_Support-v2.1.0.md`` at commit
# deaba85fc437 (opset 19; 2.3.2 publishes its list only as a PDF): every row not marked "Not Supported". Rows with
# a remark (batch size 1, Resize's nearest/bilinear modes, constant inputs of If and EyeLike) are kept: the
# exports here are batch 1 and constant-shaped. Unlike the generic npu list it keeps Shape, Gather and
# ConstantOfShape, which the toolkit folds at build time on a static graph.
RKNN: frozenset[str] = frozenset({
    "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather", "GatherElements", "Gemm",
    "GlobalAveragePool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "If",
    "InstanceNormalization", "LRN", "LSTM", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "LpNormalization", "MatMul", "Max", "MaxPool", "MaxRoiPool", "MaxUnpool",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "PRelu", "Pad", "Pow", "QuantizeLinear", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "ScatterND",
    "Shape", "Sigmoid", "Sin", "Size", "Slice", "Softmax", "Softplus", "SpaceToDepth", "Split", "Sqrt", "Squeeze",
    "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
}) | frozenset({  # off that list, but rknn-toolkit2 2.3.2 builds them and its simulator matches PyTorch at fp16
    "TopK", "GridSample",  # (reports/rknn: the biformer-topk-routing and dat-offset-sampling variants)
})

# ``onnx`` is the portable file: the ONNX standard's own ops (the list onnxruntime is checked against), no other
# domain. The onnxruntime-only forms go to ``ort``.
SUPPORT: dict[str, frozenset[str]] = {"onnx": ONNXRUNTIME, "ort": ONNXRUNTIME, "openvino": OPENVINO,
                                      "trt": TENSORRT, "npu": NPU, "opencv": OPENCV,
                                      "ncnn": NCNN, "rknn": RKNN}

# Ops outside the ONNX domain that each target runs, by domain: the onnxruntime contrib ops attn-deploy emits
# (rewrite/graph/attention.py), checked against a NumPy reference. onnxruntime 1.32's CPU provider runs
# com.microsoft MultiHeadAttention and Attention; OpenVINO 2026.4's ONNX reader turns both into its
# ScaledDotProductAttention (or its decomposition). OpenCV 5.1.0 runs both (above).
# TensorRT's ONNX parser, the NPU compilers and the portable ``onnx`` file take none.
CUSTOM: dict[str, dict[str, frozenset[str]]] = {
    "onnx": {},
    "ort": {"com.microsoft": frozenset({"MultiHeadAttention", "Attention"})},
    "opencv": {"com.microsoft": frozenset({"MultiHeadAttention", "Attention"})},
    "openvino": {"com.microsoft": frozenset({"MultiHeadAttention", "Attention"})},
    "trt": {},
    "npu": {},
    "ncnn": {},
    "rknn": {},
}

# Tensors of higher rank than these targets take (the NPU compilers above lower rank <= 4 to hardware; ncnn's
# blobs hold w, h, d and c: pnnx says "permute 5-rank tensor is not supported yet!").
MAX_RANK: dict[str, int] = {"npu": 4, "ncnn": 4}

# Reductions whose axes a target's converter reads only as an attribute (before opset 18; ReduceSum: 13). pnnx
# 20261020, measured: given as an input, ReduceMax and ReduceMin stay layers ncnn cannot load, and ReduceSum,
# ReduceMean and ReduceL2 over one axis reduce nothing in ncnn (over several axes, read correctly)
# (rewrite/graph/pnnx.py).
AXES_ATTRIBUTE_ONLY: dict[str, frozenset[str]] = {"ncnn": frozenset({"ReduceMax", "ReduceMin"})}
ONE_AXIS_INPUT_LOST: dict[str, frozenset[str]] = {"ncnn": frozenset({"ReduceSum", "ReduceMean", "ReduceL2"})}
# Reductions a target's converter reads over one axis only: pnnx turns ReduceMax and ReduceMin into torch.max and
# torch.min (one dim); over several axes they stay layers ncnn does not have.
ONE_AXIS_ONLY: dict[str, frozenset[str]] = {"ncnn": frozenset({"ReduceMax", "ReduceMin"})}

# Targets whose converter builds a ReduceMean over both spatial axes of a 4-D tensor as a global pool that keeps
# them, so that without keepdims the next op receives rank 4 where the graph holds rank 2 and the build stops
# (rknn-toolkit2 2.3.2, measured on one-node graphs; the ``mean-keep-dims`` graph pass keeps the axes).
SPATIAL_MEAN_KEEPS_AXES = frozenset({"rknn"})

# Targets without a batch axis: a concat, split, slice or gather along axis 0 is refused or mis-converted (ncnn:
# attention windows stacked on the batch axis).
NO_BATCH_AXIS = frozenset({"ncnn"})

# Ops whose result depends on computed values, not on shapes alone: routing by top-k indices and sampling at
# learned offsets. No static rewrite can replace them; the lint names the module and says who runs them.
DATA_DEPENDENT: dict[str, str] = {
    "TopK": "top-k selection (routing by computed scores)",
    "GatherElements": "gathering at computed indices (routing)",
    "GatherND": "gathering at computed indices",
    "GridSample": "sampling at computed positions (learned offsets)",
    "DeformConv": "convolution sampled at learned offsets",
}

# Limits beyond being on a support list. TensorRT: the Restrictions column of onnx-tensorrt docs/operators.md
# (commit above): TopK "`sorted` must be 1. `K` input must be less than 3840", GridSample "Input must be 4D
# input", DeformConv "`input` must have 1D or 2D spatial dimensions. `pads` for the beginning and end along each
# spatial axis must be the same". GridSample exists from opset 16 (ONNX Operators.md; torch exports it from 16);
# onnxruntime 1.32 and OpenVINO 2026.4 run versions 16, 20 and 22 (checked on this project's test graphs).
TOPK_MAX_K: dict[str, int] = {"trt": 3839}
GRIDSAMPLE_RANK: dict[str, int] = {"trt": 4}
GRIDSAMPLE_MIN_OPSET = 16
DEFORMCONV_SYMMETRIC_PADS = frozenset({"trt"})

# Ops a target's own ONNX reader lacks but attn-deploy's export for it converts: OpenVINO's ONNX frontend has no
# default-domain DeformConv (supported_ops.md above: no supported version), so exporters/openvino.py maps it to
# OpenVINO's DeformableConvolution-8 at conversion.
CONVERTED: dict[str, dict[str, str]] = {
    "openvino": {"DeformConv": "attn-deploy's OpenVINO export maps it to DeformableConvolution-8"},
}
