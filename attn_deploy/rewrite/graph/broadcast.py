"""Broadcasting done by hand: an Expand whose consumers broadcast anyway, and a constant repeated along the
batch axis. Both help every target: Expand is missing from NPU lists and costs a copy everywhere, and a
repeated constant ties the graph to the batch it was traced at.
"""

import numpy as np

from ...lint import SUPPORT, batch_constants, foldable
from .graph import Edit, Graph
from .registry import Site, graph_pass

# Ops whose inputs broadcast against each other (numpy-style, multidirectional).
BROADCASTING = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Greater", "Less",
                "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod"}


def broadcast(shapes: list[list]) -> list | None:
    """The numpy broadcast of ``shapes`` (dims may be symbols, equal when the same); None when they do not fit."""
    rank = max(len(s) for s in shapes)
    padded = [[1] * (rank - len(s)) + list(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return out


def _broadcasts_anyway(graph: Graph, node) -> bool:
    """Whether every consumer of the Expand's output would compute the same shape from the Expand's input."""
    source, expanded = node.input[0], node.output[0]
    consumers = graph.consumers[expanded]
    if expanded in graph.outputs or not consumers or graph.shape(source) is None:
        return False
    for consumer in consumers:
        if consumer.op_type not in BROADCASTING:
            return False
        shapes = [graph.shape(source if name == expanded else name) for name in consumer.input]
        if any(s is None for s in shapes) or broadcast(shapes) != graph.shape(consumer.output[0]):
            return False
    return True


def _no_op(graph: Graph, node) -> bool:
    shape = graph.shape(node.input[0])
    return shape is not None and shape == graph.shape(node.output[0])


def _expands(graph: Graph) -> list[Site]:
    return [Site(n.name) for n in graph.nodes if n.op_type == "Expand" and (
        _broadcasts_anyway(graph, n) or _no_op(graph, n))]


@graph_pass("expand-broadcast", "Expand before an op that broadcasts anyway → removed (its consumers broadcast)",
            "Expand whose every consumer is a broadcasting op (Mul, Add, ...) computing the same shape without it, "
            "or an Expand to the shape it already has", targets=tuple(SUPPORT), find=_expands)
def remove_expand(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    Edit(graph, node).finish(node.input[0])


def _batch_constants(graph: Graph) -> list[Site]:
    found = batch_constants(graph.nodes, graph.constants, graph.shapes)
    return [Site(node.name, {"constant": c}, "" if foldable(graph.constants[c]) else
                 "the constant's slices along the batch axis differ: no broadcasting form exists")
            for node, c in found]


@graph_pass("batch-constant", "constant repeated along the batch axis → its first slice, broadcasting",
            "an elementwise op combining an activation with a constant whose leading size is above 1, equals the "
            "activation's, and whose slices along it are all equal", targets=tuple(SUPPORT), find=_batch_constants)
def fold_batch_constant(graph: Graph, site: Site) -> None:
    node, name = graph.node(site.node), site.detail["constant"]
    first = np.ascontiguousarray(graph.constants[name][:1])
    node.input[:] = [Edit(graph, node).const(first) if i == name else i for i in node.input]
