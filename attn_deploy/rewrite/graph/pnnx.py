"""Reductions in the form pnnx's ONNX reader takes (ncnn).

pnnx reads a Reduce op's axes only from its ``axes`` attribute, the form before opset 18 (ReduceSum: before 13).
Given as an input, ReduceMax and ReduceMin stay layers ncnn does not have, and a ReduceSum, ReduceMean or ReduceL2
over one axis becomes an ncnn Reduction that reduces nothing, a silently wrong result (over several axes the input
is read; reports/ncnn/ops.md).
The ncnn target therefore exports at opset 17 (``exporters.ncnn.OPSET``), where only ReduceSum takes its axes as
an input: ``reduce-sum-as-mean`` writes it as a ReduceMean with the axes as an attribute, times the number of
elements reduced. pnnx also reads ReduceMax and ReduceMin only over one axis (as ``torch.max(x, dim)``): over
several (``x.amax((2, 3))``) they stay layers ncnn does not have, and ``reduce-one-axis`` reduces one axis at a time.
"""

import math

import numpy as np

from .graph import Graph, Edit, attribute
from .registry import Site, graph_pass

ATTRIBUTE_AXES_UNTIL = 17  # the last opset whose ReduceMean takes its axes as an attribute


def _reduce_sums(graph: Graph) -> list[Site]:
    return [Site(n.name, refused=_refusal(graph, n)) for n in graph.nodes if n.op_type == "ReduceSum"
            and len(n.input) > 1 and n.input[1]]


def _refusal(graph: Graph, node) -> str:
    if graph.opset > ATTRIBUTE_AXES_UNTIL:
        return (f"at opset {graph.opset} every reduction takes its axes as an input, which pnnx does not read: "
                "export at --opset 17")
    if node.input[1] not in graph.constants:
        return "its axes are computed, not a constant"
    if graph.static_shape(node.input[0]) is None:
        return "the reduced tensor's shape is not static"
    return ""


@graph_pass("reduce-sum-as-mean", "ReduceSum with axes as an input → ReduceMean with axes as an attribute, x count",
            "ReduceSum (axes an input from opset 13, which pnnx does not read)", targets=("ncnn",),
            find=_reduce_sums)
def reduce_sum_as_mean(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    shape = graph.static_shape(node.input[0])
    axes = [int(a) % len(shape) for a in graph.constants[node.input[1]].reshape(-1)]
    edit = Edit(graph, node)
    mean = edit.op("ReduceMean", node.input[0], axes=axes, keepdims=attribute(node, "keepdims", 1))
    edit.finish(edit.op("Mul", mean, edit.const(np.float32(math.prod(shape[a] for a in axes)))))


def _multi_axis_extremes(graph: Graph) -> list[Site]:
    return [Site(n.name, refused=_refusal(graph, n) if len(n.input) > 1 and n.input[1] else "")
            for n in graph.nodes if n.op_type in ("ReduceMax", "ReduceMin") and len(_axes(graph, n)) > 1]


def _axes(graph: Graph, node) -> list[int]:
    """The axes a reduction reduces, from its attribute or its constant input ([] when computed or all)."""
    given = node.input[1] if len(node.input) > 1 else ""
    values = graph.constants.get(given) if given else np.asarray(attribute(node, "axes", []))
    rank = len(graph.shape(node.input[0]) or [])
    return sorted({int(a) % rank for a in values.reshape(-1)}) if values is not None and rank else []


@graph_pass("reduce-one-axis", "ReduceMax or ReduceMin over several axes → one reduction per axis",
            "ReduceMax, ReduceMin over more than one axis (x.amax((2, 3))), which pnnx does not read",
            targets=("ncnn",), find=_multi_axis_extremes)
def reduce_one_axis(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    keepdims, edit, y = attribute(node, "keepdims", 1), Edit(graph, node), node.input[0]
    for axis in sorted(_axes(graph, node), reverse=True):  # the highest first: without keepdims the rest stay put
        y = edit.op(node.op_type, y, axes=[axis], keepdims=keepdims)
    edit.finish(y)
