"""Fused normalisations as primitive ops, for targets whose support list lacks the fused op (NPUs).

``(x - mean) / sqrt(var + eps) * scale + bias``, the mean and the (biased) variance by ReduceMean
over the normalised axes. torch exports GroupNorm as InstanceNormalization on a (N, groups, -1)
reshape, so a GroupNorm with one channel per group, or on batch-folded groups (EMA), arrives here
as InstanceNormalization. ORT and OpenVINO keep the fused ops: they run them faster.
"""

import numpy as np

from .graph import Edit, Graph, attribute
from .registry import Site, graph_pass, lacking



def _of_type(op: str):
    return lambda graph: [Site(n.name) for n in graph.nodes if n.op_type == op]


def normalised(edit: Edit, x: str, axes: list[int], eps: float) -> str:
    mean = edit.reduce("ReduceMean", x, axes)
    centred = edit.op("Sub", x, mean)
    variance = edit.reduce("ReduceMean", edit.op("Mul", centred, centred), axes)
    return edit.op("Div", centred, edit.op("Sqrt", edit.op("Add", variance, edit.const(np.float32(eps)))))


def _affine(edit: Edit, y: str, scale: str, bias: str | None, shape: list[int]) -> str:
    """``y * scale + bias`` with both reshaped to ``shape``; a constant identity (ones, zeros) is left out."""
    graph = edit.graph
    for name, identity, op in ((scale, 1.0, "Mul"), (bias, 0.0, "Add")):
        if not name:
            continue
        value = graph.constants.get(name)
        if value is not None and np.all(value == identity):
            continue
        y = edit.op(op, y, edit.const(value.reshape(shape)) if value is not None else edit.reshape(name, shape))
    return y


@graph_pass("instance-norm", "InstanceNormalization → ReduceMean, Sub, Mul, Add, Sqrt, Div",
            "InstanceNormalization (also torch's export of GroupNorm)", targets=lacking("InstanceNormalization"),
            find=_of_type("InstanceNormalization"))
def instance_norm(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    rank = len(graph.shape(node.input[0]))
    edit = Edit(graph, node)
    y = normalised(edit, node.input[0], list(range(2, rank)), attribute(node, "epsilon", 1e-5))
    edit.finish(_affine(edit, y, node.input[1], node.input[2], [-1] + [1] * (rank - 2)))


def _layer_norms(graph: Graph) -> list[Site]:
    return [Site(n.name, refused="its mean or inverse deviation output is used" if any(
        graph.consumers[o] or o in graph.outputs for o in n.output[1:] if o) else "")
        for n in graph.nodes if n.op_type == "LayerNormalization"]


@graph_pass("layer-norm", "LayerNormalization → ReduceMean, Sub, Mul, Add, Sqrt, Div",
            "LayerNormalization", targets=lacking("LayerNormalization"), find=_layer_norms)
def layer_norm(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    rank = len(graph.shape(node.input[0]))
    axis = attribute(node, "axis", -1) % rank
    edit = Edit(graph, node)
    y = normalised(edit, node.input[0], list(range(axis, rank)), attribute(node, "epsilon", 1e-5))
    bias = node.input[2] if len(node.input) > 2 else None
    edit.finish(_affine(edit, y, node.input[1], bias, graph.shape(node.input[0])[axis:]))


def _per_channel(graph: Graph, name: str, channels: int) -> np.ndarray:
    """GroupNormalization-18 scales per group, -21 per channel: a per-group constant repeated to channels."""
    value = graph.constants[name]
    return np.repeat(value, channels // value.size) if value.size != channels else value


def _group_norms(graph: Graph) -> list[Site]:
    return [Site(n.name, refused="" if n.input[1] in graph.constants and n.input[2] in graph.constants else
                 "scale or bias is not a constant") for n in graph.nodes if n.op_type == "GroupNormalization"]


@graph_pass("group-norm", "GroupNormalization → Reshape to (N, groups, -1), ReduceMean, Sub, Mul, Add, Sqrt, Div",
            "GroupNormalization", targets=lacking("GroupNormalization"), find=_group_norms)
def group_norm(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    shape = graph.shape(node.input[0])
    channels, edit = shape[1], Edit(graph, node)
    grouped = edit.reshape(node.input[0], [0, attribute(node, "num_groups", 1), -1])
    y = edit.reshape(normalised(edit, grouped, [2], attribute(node, "epsilon", 1e-5)), [0, *shape[1:]])
    affine = [channels] + [1] * (len(shape) - 2)
    edit.finish(_affine(edit, y, edit.const(_per_channel(graph, node.input[1], channels)),
                        edit.const(_per_channel(graph, node.input[2], channels)), affine))
