"""Graph lint: what in an exported ONNX graph will break or bloat a target, found without the target.

Every target fails on ScatterND, Einsum, NonZero, If and Loop; on Shape-derived subgraphs in a static export; on
infinite constants (they turn into NaN in fp16 arithmetic and in masks that cover a whole row); on ops outside the
target's support list (``support``); and on tensors of higher rank than it takes (npu, ncnn: 4); for targets
without a batch axis (ncnn), on data moved along axis 0 (``batch_axis``); for ncnn, on reductions whose axes pnnx
does not read (an input, or several for ReduceMax and ReduceMin); for rknn, on a ReduceMean over (2, 3) without
keepdims. Data-dependent ops (top-k routing, sampling at learned offsets) have no static equivalent: each is named
by its module, with the targets that can and cannot run it (``data_dependent``).

A finding is an error (the lint fails) or a warning (the graph runs on the target, but the user
should know). A constant that fills the batch axis instead of broadcasting over it (a constant of
rank >= 2 whose leading size is above 1 and equals that of the activation it is combined with
elementwise) is a warning in a static export when its slices are all equal (right at this batch,
and the batch-constant graph pass folds it), and an error in a dynamic export or when its slices
differ (no broadcasting form exists).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from .support import (AXES_ATTRIBUTE_ONLY, CUSTOM, DATA_DEPENDENT, MAX_RANK, NO_BATCH_AXIS, ONE_AXIS_INPUT_LOST,
                      ONE_AXIS_ONLY, SPATIAL_MEAN_KEEPS_AXES, SUPPORT)

TARGETS = tuple(SUPPORT)
NEVER = ("ScatterND", "Einsum", "NonZero", "If", "Loop")
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Max", "Min", "Pow", "Equal", "Greater", "Less"}


@dataclass
class Finding:
    check: str
    detail: str
    nodes: list[str] = field(default_factory=list)
    severity: str = "error"  # "error" fails the lint; "warning" is reported, the graph runs on the target
    module: str = ""  # the PyTorch module path the finding is about, where it is about one


@dataclass
class LintReport:
    path: Path
    target: str
    static: bool
    op_counts: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def passed(self) -> bool:
        return not self.errors


def names(nodes, limit: int = 5) -> list[str]:
    return [n.name or n.op_type for n in nodes][:limit]


def _op_findings(graph, target: str, static: bool) -> list[Finding]:
    findings, flagged = [], NEVER + (("Shape", "Size") if static else ())
    for op in flagged:
        nodes = [n for n in graph.node if n.op_type == op]
        if nodes:
            why = "shape arithmetic in a static export" if op in ("Shape", "Size") else "unsupported on edge targets"
            findings.append(Finding(f"op {op}", f"{len(nodes)} node(s): {why}", names(nodes)))
    ops = {n.op_type for n in graph.node if n.domain in ("", "ai.onnx")}
    outside = sorted(ops - SUPPORT[target] - set(flagged) - set(DATA_DEPENDENT))  # those get a finding of their own
    outside += sorted({f"{n.domain}.{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")
                       and n.op_type not in CUSTOM[target].get(n.domain, ())})
    if outside:
        findings.append(Finding("support list", f"ops that {target} does not support: {', '.join(outside)}"))
    return findings


def constants(graph) -> dict[str, np.ndarray]:
    """Every constant's value: initializers and Constant nodes."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _infinite(values: dict[str, np.ndarray]) -> list[Finding]:
    found = [k for k, v in values.items() if v.dtype.kind == "f" and np.isinf(v).any()]
    return [Finding("infinite constant", f"{len(found)} constant(s) hold ±inf", found[:5])] if found else []


def tensor_shapes(model) -> dict[str, list]:
    """Each tensor's inferred shape: ints where known, the symbol (or "?") where not."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {t.name: list(t.dims) for t in inferred.initializer}
    for info in [*inferred.input, *inferred.value_info, *inferred.output]:
        if info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
    return shapes


def _fills_batch(constant: np.ndarray, activation: list) -> bool:
    if constant.ndim < 2 or constant.shape[0] <= 1 or len(activation) != constant.ndim:
        return False
    return isinstance(activation[0], str) or activation[0] == constant.shape[0]


def batch_constants(nodes, values: dict[str, np.ndarray], shapes: dict[str, list]) -> list[tuple[object, str]]:
    """(node, constant) for each elementwise node combining an activation with a constant that fills its batch axis."""
    return [(node, c) for node in nodes if node.op_type in ELEMENTWISE for c in node.input if c in values and any(
        _fills_batch(values[c], shapes[a]) for a in node.input if a not in values and a in shapes)]


def foldable(constant: np.ndarray) -> bool:
    """Whether every slice along the leading axis equals the first, so that the first slice, broadcast, is the same."""
    return bool(np.array_equal(constant, np.broadcast_to(constant[:1], constant.shape)))


def _batch_filling(graph, values: dict[str, np.ndarray], shapes: dict[str, list], static: bool) -> list[Finding]:
    found = batch_constants(graph.node, values, shapes)
    repeated = [node for node, c in found if foldable(values[c])]
    differing = [node for node, c in found if not foldable(values[c])]
    check, what = "batch-dependent constant", "node(s) combine an activation with a constant that fills its leading " \
                                             "(batch) axis"
    findings = []
    if differing:
        findings.append(Finding(check, f"{len(differing)} {what} with slices that differ: no broadcasting form exists, "
                                "the graph is right at this batch only", names(differing)))
    if repeated:
        verdict = ("right at this batch, but the file can never be made dynamic" if static else
                   "wrong at any other batch of this dynamic export")
        findings.append(Finding(check, f"{len(repeated)} {what} with one slice repeated: {verdict}; the batch-constant "
                                "graph pass folds it to its first slice", names(repeated),
                                "warning" if static else "error"))
    return findings


def _reduce_axes(graph, target: str, values: dict[str, np.ndarray]) -> list[Finding]:
    """Reductions whose axes ``target``'s converter does not read: given as an input (to one that reads only the
    attribute, or as one axis or computed to one that loses a single axis), or several for one that it reads over
    one axis only."""
    ops, single = AXES_ATTRIBUTE_ONLY.get(target, frozenset()), ONE_AXIS_ONLY.get(target, frozenset())
    lost = ONE_AXIS_INPUT_LOST.get(target, frozenset())
    given = [n for n in graph.node if len(n.input) > 1 and n.input[1]]
    inputs = [n for n in given if n.op_type in ops or (n.op_type in lost and (
        n.input[1] not in values or values[n.input[1]].size == 1))]
    several = [n for n in graph.node if n.op_type in single and n not in given and len(next(
        (a.ints for a in n.attribute if a.name == "axes"), [])) > 1]
    found = []
    if inputs:
        found.append(Finding("reduce axes input", f"{len(inputs)} reduction(s) ({_kinds(inputs)}) with their axes as "
                             f"an input, which {target}'s converter does not read (it reads the attribute of opset 17 "
                             "and before): they reduce nothing or do not load; export at --opset 17", names(inputs)))
    if several:
        found.append(Finding("reduce several axes", f"{len(several)} reduction(s) ({_kinds(several)}) over several "
                             f"axes, which {target}'s converter reads over one axis only: they do not load",
                             names(several)))
    return found


def attribute(node, name: str, default=None):
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def reduced_axes(node, values: dict[str, np.ndarray], rank: int) -> list[int]:
    """The axes a reduction over a tensor of ``rank`` reduces, from its constant input (in ``values``) or its
    attribute, each in [0, rank); every axis when it names none."""
    given = node.input[1] if len(node.input) > 1 and node.input[1] else ""
    axes = values.get(given) if given else attribute(node, "axes")
    return [int(a) % rank for a in np.reshape(axes, -1)] if axes is not None else list(range(rank))


def spatial_means(nodes, values: dict[str, np.ndarray], shapes: dict[str, list]) -> list:
    """The ReduceMean nodes over both spatial axes of a 4-D tensor that drop them (no keepdims)."""
    return [n for n in nodes if n.op_type == "ReduceMean" and attribute(n, "keepdims", 1) == 0
            and len(shapes.get(n.input[0]) or []) == 4 and sorted(reduced_axes(n, values, 4)) == [2, 3]]


def _spatial_means(graph, values: dict[str, np.ndarray], shapes: dict[str, list]) -> list[Finding]:
    """ReduceMean over both spatial axes of a 4-D tensor without keepdims, which the converter keeps."""
    found = spatial_means(graph.node, values, shapes)
    return [Finding("spatial mean without keepdims", f"{len(found)} ReduceMean(s) over (2, 3) without keepdims, "
                    "which the converter builds as a global pool keeping those axes: the build stops on the rank; "
                    "the mean-keep-dims graph pass keeps them", names(found))] if found else []


def _kinds(nodes) -> str:
    return ", ".join(sorted({n.op_type for n in nodes}))


def _rank(target: str, shapes: dict[str, list], values: dict[str, np.ndarray]) -> list[Finding]:
    limit = MAX_RANK[target]
    ranks = {**{k: len(v) for k, v in shapes.items()}, **{k: v.ndim for k, v in values.items()}}
    high = sorted(k for k, r in ranks.items() if r > limit)
    return [Finding(f"rank > {limit}", f"{len(high)} tensor(s) of rank above {limit}", high[:5])] if high else []


def _static(graph) -> bool:
    return all(d.HasField("dim_value") for i in graph.input for d in i.type.tensor_type.shape.dim)


def opset(model) -> int:
    """The default-domain opset a model imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def lint(path: str | Path, target: str = "ort") -> LintReport:
    """Check the ONNX graph at ``path`` against ``target`` (ort, openvino, trt, npu or ncnn)."""
    import onnx

    from .batch_axis import batch_axis
    from .data_dependent import data_dependent

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
    values, shapes = constants(graph), tensor_shapes(model)
    report = LintReport(path, target, static, dict(sorted(counts.items())))
    report.findings = [*_op_findings(graph, target, static), *_infinite(values),
                       *_batch_filling(graph, values, shapes, static),
                       *data_dependent(graph, target, shapes, values, opset(model))]
    report.findings += _reduce_axes(graph, target, values)
    if target in MAX_RANK:
        report.findings += _rank(target, shapes, values)
    if target in SPATIAL_MEAN_KEEPS_AXES:
        report.findings += _spatial_means(graph, values, shapes)
    if target in NO_BATCH_AXIS:
        report.findings += batch_axis(graph, shapes, values)
    return report
