"""An exported ONNX model as the graph passes see it, and the edits they make to it.

``Graph`` knows each tensor's inferred shape, each constant's value, each tensor's producer and
consumers, and each node's module path (from torch's node-name scopes). ``Edit`` builds the nodes
that replace one node; they are named in that node's scope, so that the lint, the localisation and
the report still name the PyTorch module the new nodes compute.
"""

import collections
import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...lint import attribute, reduced_axes  # attribute: the passes take it from here, beside the graph

RESHAPES = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")  # ops that only relabel a row-major buffer's shape


class Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self._names = itertools.count()
        self.refresh()

    def refresh(self) -> None:
        """Recompute shapes, constants, producers, consumers and scopes after an edit."""
        from ...exporters.onnx import node_scopes
        from ...lint import constants, tensor_shapes

        graph = self.model.graph
        self.shapes = tensor_shapes(self.model)
        self.constants = constants(graph)
        self.producers = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = collections.defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.scopes = node_scopes(graph)
        self.outputs = {o.name for o in graph.output}

    @property
    def nodes(self) -> list:
        return list(self.model.graph.node)

    @property
    def opset(self) -> int:
        from ...lint import opset

        return opset(self.model)

    def node(self, name: str):
        return next(n for n in self.model.graph.node if n.name == name)

    def shape(self, name: str) -> list | None:
        return self.shapes.get(name)

    def static_shape(self, name: str) -> list[int] | None:
        """The tensor's shape when every dimension is known, else None."""
        shape = self.shapes.get(name)
        return shape if shape is not None and all(isinstance(d, int) for d in shape) else None

    def reduced_axes(self, node, rank: int) -> list[int]:
        """The axes a reduction over a tensor of ``rank`` reduces, from its constant input or its attribute, each in
        [0, rank); every axis when it names none."""
        return reduced_axes(node, self.constants, rank)

    def scope(self, node) -> str:
        return self.scopes.get(node.name, "")

    def fresh(self, base: str) -> str:
        """A tensor or node name starting with ``base`` that no tensor or node of the graph has."""
        graph = self.model.graph
        taken = self.producers.keys() | self.constants.keys() | {i.name for i in graph.input} | {
            n.name for n in graph.node}
        while (name := f"{base}_gp{next(self._names)}") in taken:
            pass
        return name

    def add_constant(self, value: np.ndarray, like) -> str:
        name = self.fresh(f"{_prefix(like)}/const")
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.constants[name] = np.asarray(value)
        return name

    def replace(self, node, new_nodes: list) -> None:
        """Put ``new_nodes`` where ``node`` was (topological order is kept: they use only earlier tensors)."""
        nodes = self.model.graph.node
        index = list(nodes).index(node)
        del nodes[index]
        for offset, new in enumerate(new_nodes):
            nodes.insert(index + offset, new)

    def rewire(self, old: str, new: str) -> None:
        """Every consumer of tensor ``old`` reads ``new`` instead."""
        for node in self.model.graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    def prune(self) -> None:
        """Drop nodes whose outputs nothing reads, then initializers nothing reads and shapes of gone tensors."""
        graph = self.model.graph
        while True:
            used = {name for node in graph.node for name in node.input} | self.outputs
            dead = [n for n in graph.node if not any(out in used for out in n.output)]
            if not dead:
                break
            for node in dead:
                graph.node.remove(node)
        used = {name for node in graph.node for name in node.input} | self.outputs
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        produced = {out for node in graph.node for out in node.output}
        infos = [info for info in graph.value_info if info.name in produced]
        del graph.value_info[:]
        graph.value_info.extend(infos)

    def tidy(self) -> None:
        """Collapse the transpose chains, then the reshape chains, that rewrites leave between their nodes."""
        self.collapse_transposes()
        self.collapse_reshapes()

    def collapse_transposes(self) -> None:
        """A transpose of a transpose is one transpose, or none where they cancel."""
        for node in self.nodes:  # topological order: a chain collapses whole in one sweep
            source = self.producers.get(node.input[0]) if node.op_type == "Transpose" else None
            if source is None or source.op_type != "Transpose":
                continue
            rank = len(self.shape(source.input[0]) or attribute(source, "perm", []))
            first = list(attribute(source, "perm", reversed(range(rank))))
            perm = [first[a] for a in attribute(node, "perm", reversed(range(rank)))]
            edit = Edit(self, node)
            edit.finish(source.input[0] if perm == sorted(perm) else edit.op("Transpose", source.input[0], perm=perm))
        self.prune()
        self.refresh()

    def raise_opset(self, version: int) -> None:
        """Convert the model to default-domain opset ``version`` (onnx's version converter), its IR version kept
        readable by the runtimes in use."""
        from onnx import version_converter

        from ...exporters.onnx import MAX_IR_VERSION

        converted = version_converter.convert_version(self.model, version)
        converted.ir_version = min(converted.ir_version, MAX_IR_VERSION)
        self.model.CopyFrom(converted)
        self.refresh()

    def collapse_reshapes(self) -> None:
        """A reshape of a reshape reads the first one's input; a reshape to the shape it already has goes.

        Needs static shapes: the collapsed reshape gets its output's inferred shape as a constant.
        """
        for node in self.nodes:  # topological order: a chain collapses whole in one sweep
            source = self.producers.get(node.input[0]) if node.op_type in RESHAPES else None
            shape = self.static_shape(node.output[0])
            if source is None or source.op_type not in RESHAPES or shape is None:
                continue
            edit = Edit(self, node)
            edit.finish(edit.reshape(source.input[0], shape))
        self.refresh()
        for node in self.nodes:
            if node.op_type in RESHAPES and node.output[0] not in self.outputs:
                before, after = self.static_shape(node.input[0]), self.static_shape(node.output[0])
                if before is not None and before == after:
                    self.rewire(node.output[0], node.input[0])
        self.prune()
        self.refresh()


class Edit:
    """The nodes that replace ``node``: each op named in its scope; ``finish`` puts them in its place."""

    def __init__(self, graph: Graph, node):
        self.graph, self.node, self.new = graph, node, []

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs) -> str | list[str]:
        base = f"{_prefix(self.node)}/{op_type}"
        names = [self.graph.fresh(f"{base}_out") for _ in range(outputs)]
        self.new.append(helper.make_node(op_type, list(inputs), names, name=self.graph.fresh(base), **attrs))
        self.graph.producers.update(dict.fromkeys(names, self.new[-1]))
        return names[0] if outputs == 1 else names

    def const(self, value) -> str:
        return self.graph.add_constant(np.asarray(value), self.node)

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", x, self.ints(shape))

    def reduce(self, op_type: str, x: str, axes, keepdims: int = 1) -> str:
        """A reduction over ``axes``, with the axes as an input from opset 18 (ReduceSum: 13) and an attribute before."""
        since = 13 if op_type == "ReduceSum" else 18
        if self.graph.opset >= since:
            return self.op(op_type, x, self.ints(axes), keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)

    def finish(self, *values: str) -> None:
        """Replace the node: its outputs become ``values`` (new tensors are renamed, existing ones rewired)."""
        for out, value in zip(self.node.output, values):
            producer = next((n for n in self.new if value in n.output), None)
            if producer is None:
                if out in self.graph.outputs:
                    self.new.append(helper.make_node("Identity", [value], [out], name=self.graph.fresh(
                        f"{_prefix(self.node)}/Identity")))
                else:
                    self.graph.rewire(out, value)
                continue
            producer.output[list(producer.output).index(value)] = out
            self.graph.producers[out] = producer
            for n in self.new:
                n.input[:] = [out if i == value else i for i in n.input]
        self.graph.replace(self.node, self.new)


def _prefix(node) -> str:
    """``/model.10/attn/Transpose_3`` -> ``/model.10/attn``: new nodes keep the module path in their names."""
    return node.name.rsplit("/", 1)[0] if "/" in node.name else ""

