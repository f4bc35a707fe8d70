"""Per-op profiles: where an inference spends its time, by op type, by model block, memory- against compute-bound.

Backends report (node, op type, ms) through their runner's ``op_times`` (onnxruntime's session profiling,
OpenVINO's per-layer counters); this file only aggregates, and knows no backend. Node names carry the
PyTorch module path that torch's exporter recorded (``/model.10/attn/Softmax``), which OpenVINO keeps.
"""

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

# Op types of onnxruntime (ONNX ops and its fusions) and of OpenVINO's CPU plugin (executed layer types).
COMPUTE_BOUND = frozenset({
    "Conv", "ConvTranspose", "FusedConv", "NhwcConv", "MatMul", "FusedMatMul", "Gemm", "QLinearConv",
    "MatMulInteger", "ConvInteger", "Convolution", "GroupConvolution", "Deconvolution", "FullyConnected",
})
MEMORY_BOUND = frozenset({
    # data movement and layout
    "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "VariadicSplit", "Slice",
    "StridedSlice", "Gather", "GatherElements", "Expand", "Broadcast", "Tile", "Pad", "Identity", "Roll",
    "Reorder", "ReorderInput", "ReorderOutput", "ShapeOf", "Shape", "Cast", "Convert", "DepthToSpace",
    # element-wise
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Max", "Min", "Where", "Equal",
    "Greater", "Less", "Sigmoid", "HardSigmoid", "HardSwish", "Relu", "LeakyRelu", "Tanh", "Erf", "Gelu",
    "QuickGelu", "Swish", "SwishCPU", "Clip", "Eltwise", "Subgraph", "Multiply", "Subtract", "Divide",
    "Power", "Mish", "Softplus", "Elu", "Not", "And", "Or", "Mod", "Floor", "Ceil", "Round",
    # normalisation and reductions
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "SimplifiedLayerNormalization", "SkipLayerNormalization", "MVN", "NormalizeL2", "ReduceMean", "ReduceSum",
    "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "CumSum",
    # softmax
    "Softmax", "LogSoftmax", "SoftMax",
})
CLASSES = ("memory-bound", "compute-bound", "other")
_BLOCK = re.compile(r"(?:^|/|_)(model\.\d+)(?=/|$)")


def op_class(op_type: str) -> str:
    """memory-bound (data movement, element-wise, normalisation, softmax), compute-bound (Conv, MatMul,
    Gemm), or other: pooling, resizing, what is not listed, and OpenVINO's ``Subgraph+MatMul`` (a fused
    MatMul-Softmax-MatMul, whose counters do not split the two kinds of work). OpenVINO's plain ``Subgraph``
    is a fused element-wise chain."""
    if op_type in COMPUTE_BOUND:
        return "compute-bound"
    return "memory-bound" if op_type in MEMORY_BOUND else "other"


def block_of(node: str) -> str:
    """The YOLO block a node belongs to (``model.10``), or "(graph)" for nodes that carry no module path."""
    found = _BLOCK.search(node)
    return found.group(1) if found else "(graph)"


@dataclass
class OpProfile:
    """Milliseconds per inference, summed over the nodes of one backend's profile."""

    backend: str
    runs: int
    total_ms: float
    by_type: dict[str, float]
    by_block: dict[str, float]
    by_class: dict[str, float]

    @property
    def memory_bound_share(self) -> float:
        return self.by_class.get("memory-bound", 0.0) / self.total_ms if self.total_ms else 0.0

    @property
    def compute_bound_share(self) -> float:
        return self.by_class.get("compute-bound", 0.0) / self.total_ms if self.total_ms else 0.0

    def inside(self, blocks: list[str]) -> tuple[float, float]:
        """Time in ``blocks`` (ms) and its share of the profile."""
        ms = sum(self.by_block.get(b, 0.0) for b in blocks)
        return ms, ms / self.total_ms if self.total_ms else 0.0


def aggregate(backend: str, rows: list[tuple[str, str, float]], runs: int) -> OpProfile:
    """Sum (node, op type, ms) rows by op type, by block and by class."""
    by_type, by_block, by_class = defaultdict(float), defaultdict(float), defaultdict(float)
    for node, kind, ms in rows:
        by_type[kind] += ms
        by_block[block_of(node)] += ms
        by_class[op_class(kind)] += ms

    def ranked(d: dict) -> dict[str, float]:
        return dict(sorted(d.items(), key=lambda kv: -kv[1]))

    return OpProfile(backend, runs, sum(by_type.values()), ranked(by_type), ranked(by_block),
                     {c: by_class.get(c, 0.0) for c in CLASSES})


def profile(runner, x: np.ndarray, runs: int = 10, warmup: int = 2) -> OpProfile:
    """Profile ``runner`` (opened with ``profiling=True``) on ``x``: ``warmup`` runs, then ``runs`` profiled."""
    for _ in range(warmup):
        runner.run([x])
    return aggregate(runner.backend, runner.op_times(x, runs), runs)
