"""The batch axis, for targets that have none (ncnn): its blobs are w, h, d, c, and pnnx drops a leading
size 1. A graph that moves data along axis 0 cannot be converted faithfully: pnnx refuses a concat or split
there ("cat along batch axis 0 is not supported"), and ncnn then cannot load the model. CGA's windows are
the usual cause: stacked on the batch axis by a concat and split off again after the attention.

Flagged, on activations of rank 2 or more: Concat, Split and Gather along axis 0, Slice over axis 0 that does
not keep it whole, and reductions and softmaxes over an axis 0 of more than one slice (ncnn drops the leading
axis: an SK block's branches merged into it crashed ncnn). A Concat along it converts without a warning where
no split follows, and ncnn then computes a wrong result (reports/ncnn/ops.md). Reshapes and transposes that
move sizes into or out of axis 0 are not flagged: pnnx takes them (multi-head attention's reshapes convert and
pass parity in ncnn, reports/ncnn/report.md).
"""

import numpy as np

from . import Finding, names

REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"}


def _axis(node, default: int = 0) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def _along_batch(node, shapes: dict[str, list], values: dict[str, np.ndarray]) -> bool:
    data = node.input[0] if node.input else ""
    shape = shapes.get(data) or ([] if data not in values else list(values[data].shape))
    if data in values or len(shape) < 2:
        return False  # constants and shape arithmetic fold away
    rank, op = len(shape), node.op_type
    if op in ("Concat", "Split", "Gather"):
        return _axis(node) % rank == 0
    if op in REDUCTIONS or op in ("Softmax", "LogSoftmax"):  # over axis 0 of more than one slice
        return isinstance(shape[0], int) and shape[0] > 1 and 0 in _reduced(node, rank, values)
    if op == "Slice":
        return _slices_batch(node, shape, values)
    return False


def _reduced(node, rank: int, values: dict[str, np.ndarray]) -> set[int]:
    if node.op_type.endswith("Softmax"):
        return {_axis(node, -1) % rank}
    given = values.get(node.input[1]) if len(node.input) > 1 and node.input[1] else next(
        (np.array(a.ints) for a in node.attribute if a.name == "axes"), None)
    return set(range(rank)) if given is None else {int(a) % rank for a in np.asarray(given).reshape(-1)}


def _slices_batch(node, shape: list, values: dict[str, np.ndarray]) -> bool:
    inputs = list(node.input) + [""] * 5
    starts, ends = values.get(inputs[1]), values.get(inputs[2])
    axes = values.get(inputs[3]) if inputs[3] else np.arange(len(starts) if starts is not None else 0)
    if starts is None or ends is None or axes is None:
        return False
    for axis, start, end in zip(axes.tolist(), starts.tolist(), ends.tolist()):
        size = shape[axis % len(shape)]
        if axis % len(shape) == 0 and not (start == 0 and (not isinstance(size, int) or end >= size)):
            return True
    return False


def batch_axis(graph, shapes: dict[str, list], values: dict[str, np.ndarray]) -> list[Finding]:
    """One finding per op type that moves data along the batch axis."""
    found: dict[str, list] = {}
    for node in graph.node:
        if _along_batch(node, shapes, values):
            found.setdefault(node.op_type, []).append(node)
    return [Finding(f"batch axis {op}", f"{len(nodes)} {op} node(s) along the batch axis (axis 0), which this target "
                    "does not have: attention windows or heads stacked on the batch must stay off it", names(nodes))
            for op, nodes in sorted(found.items())]
