"""Graph lint: what in an exported ONNX graph will break or bloat a target, found without the target.

Every target fails on ScatterND, Einsum, NonZero, If and Loop; on Shape-derived subgraphs in a
static export; on infinite constants (they turn into NaN in fp16 arithmetic and in masks that
cover a whole row); on constants that fill the batch axis instead of broadcasting over it (a
constant of rank >= 2 whose leading size is above 1 and equals that of the activation it is
combined with elementwise); and on ops outside the target's support list (``support``). ``npu``
also fails on tensors of rank above 4.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from .support import SUPPORT

TARGETS = tuple(SUPPORT)
NEVER = ("ScatterND", "Einsum", "NonZero", "If", "Loop")
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Pow", "Equal", "Greater", "Less"}
MAX_NPU_RANK = 4


@dataclass
class Finding:
    check: str
    detail: str
    nodes: list[str] = field(default_factory=list)


@dataclass
class LintReport:
    path: Path
    target: str
    static: bool
    op_counts: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings


def _names(nodes, limit: int = 5) -> list[str]:
    return [n.name or n.op_type for n in nodes][:limit]


def _op_findings(graph, target: str, static: bool) -> list[Finding]:
    findings, flagged = [], NEVER + (("Shape", "Size") if static else ())
    for op in flagged:
        nodes = [n for n in graph.node if n.op_type == op]
        if nodes:
            why = "shape arithmetic in a static export" if op in ("Shape", "Size") else "unsupported on edge targets"
            findings.append(Finding(f"op {op}", f"{len(nodes)} node(s): {why}", _names(nodes)))
    outside = sorted({n.op_type for n in graph.node if n.domain in ("", "ai.onnx")} - SUPPORT[target] - set(flagged))
    if outside:
        findings.append(Finding("support list", f"ops that {target} does not support: {', '.join(outside)}"))
    return findings


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _infinite(constants: dict[str, np.ndarray]) -> list[Finding]:
    names = [k for k, v in constants.items() if v.dtype.kind == "f" and np.isinf(v).any()]
    return [Finding("infinite constant", f"{len(names)} constant(s) hold ±inf", names[:5])] if names else []


def _shapes(model) -> dict[str, list]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return shapes


def _fills_batch(constant: np.ndarray, activation: list) -> bool:
    if constant.ndim < 2 or constant.shape[0] <= 1 or len(activation) != constant.ndim:
        return False
    return isinstance(activation[0], str) or activation[0] == constant.shape[0]


def _batch_filling(graph, constants: dict[str, np.ndarray], shapes: dict[str, list]) -> list[Finding]:
    culprits = [
        node for node in graph.node if node.op_type in ELEMENTWISE and any(
            _fills_batch(constants[c], shapes[a]) for c in node.input if c in constants
            for a in node.input if a not in constants and a in shapes)
    ]
    if not culprits:
        return []
    return [Finding("batch-dependent constant", f"{len(culprits)} node(s) combine an activation with a constant that "
                    "fills its leading (batch) axis instead of broadcasting over it", _names(culprits))]


def _rank(shapes: dict[str, list], constants: dict[str, np.ndarray]) -> list[Finding]:
    ranks = {**{k: len(v) for k, v in shapes.items()}, **{k: v.ndim for k, v in constants.items()}}
    high = sorted(k for k, r in ranks.items() if r > MAX_NPU_RANK)
    return [Finding("rank > 4", f"{len(high)} tensor(s) of rank above {MAX_NPU_RANK}", high[:5])] if high else []


def _static(graph) -> bool:
    return all(d.HasField("dim_value") for i in graph.input for d in i.type.tensor_type.shape.dim)


def lint(path: str | Path, target: str = "ort") -> LintReport:
    """Check the ONNX graph at ``path`` against ``target`` (ort, openvino, trt or npu)."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise AttnDeployError(f"{path} does not exist")
    if target not in SUPPORT:
        raise AttnDeployError(f"unknown lint target {target!r}; choose one of {', '.join(TARGETS)}")
    try:
        model = onnx.load(path)
    except Exception as e:
        raise AttnDeployError(f"{path} is not a readable ONNX model: {type(e).__name__}: {e}") from e
    graph, static = model.graph, _static(model.graph)
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    constants, shapes = _constants(graph), _shapes(model)
    report = LintReport(path, target, static, dict(sorted(counts.items())))
    report.findings = [*_op_findings(graph, target, static), *_infinite(constants),
                       *_batch_filling(graph, constants, shapes)]
    if target == "npu":
        report.findings += _rank(shapes, constants)
    return report
