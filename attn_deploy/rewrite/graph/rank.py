"""Rank reduction for targets that take tensors of rank 4 at most (NPUs).

Attention code raises the rank to move axes: einops window and patch rearranges, channel shuffles,
head splits, branches stacked on a new axis. Each op on such a tensor is rewritten alone at rank 4
or less, between reshapes; the reshapes then collapse into their neighbours (a reshape of a reshape
is one reshape), and no tensor of high rank is left.

- ``rank-transpose``: a permutation of high rank. Size-1 axes are dropped and axes that the
  permutation keeps together (adjacent, in order) are merged; the same permutation over the merged
  axes is one Transpose when at most 4 remain, else a chain of rank-4 Transposes, each swapping two
  adjacent blocks of axes.
- ``rank-merge``: elementwise ops (with broadcasting), reductions, Softmax, MatMul, Concat, Split,
  Slice, Gather and Expand over high-rank tensors (a stacked branch axis, a head axis), computed over
  merged axes: adjacent axes merge when every input treats them alike (all full or all broadcast;
  all reduced or all kept; all batch axes of a MatMul).
"""

import math

import numpy as np

from ...lint.support import MAX_RANK
from .broadcast import BROADCASTING
from .graph import RESHAPES, Edit, Graph, attribute
from .registry import Site, graph_pass, lacking

RANK_TARGETS = tuple(MAX_RANK)
LIMIT = min(MAX_RANK.values())
UNARY = {"Abs", "Neg", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Erf", "Reciprocal", "HardSigmoid",
         "HardSwish", "LeakyRelu", "Elu", "Softplus", "Clip", "Cast", "Not", "Floor", "Ceil", "Sign", "Identity"}
REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"}
AXIS_OPS = {"Softmax", "LogSoftmax", "Concat", "Split", "Gather"}


def _high(graph: Graph, node) -> bool:
    names = [n for n in (*node.input, *node.output) if n]
    return any(len(graph.shape(n) or []) > LIMIT for n in names)


def _product(dims) -> int:
    return math.prod(dims) if dims else 1


# --- rank-transpose --------------------------------------------------------------------------------------------


def merged_permutation(shape: list[int], perm: list[int]) -> tuple[list[int], list[int]]:
    """The same permutation over merged axes: size-1 axes dropped, axes that stay adjacent and in order merged.

    Returns the merged input shape and the permutation of the merged axes.
    """
    kept = [a for a in range(len(shape)) if shape[a] != 1]
    order = [kept.index(a) for a in perm if shape[a] != 1]  # kept axes, in output order, by input position
    runs: list[list[int]] = []
    for position in order:
        if runs and position == runs[-1][-1] + 1:
            runs[-1].append(position)
        else:
            runs.append([position])
    by_input = sorted(range(len(runs)), key=lambda r: runs[r][0])
    merged_shape = [_product([shape[kept[p]] for p in runs[r]]) for r in by_input]
    return merged_shape, [by_input.index(r) for r in range(len(runs))]


def block_swaps(shape: list[int], perm: list[int]) -> list[tuple[list[int], list[int]]]:
    """``perm`` of ``shape`` as a chain of rank-4 views (before, A, B, after), each transposed to (before, B, A, after).

    Each step brings the next output axis (with any that follow it in order) to its place, so the chain has
    at most ``len(perm)`` steps.
    """
    current, steps = list(range(len(perm))), []
    for i in range(len(perm)):
        if current[i] == perm[i]:
            continue
        j = current.index(perm[i])
        k = j + 1
        while k < len(current) and i + k - j < len(perm) and current[k] == perm[i + k - j]:
            k += 1
        sizes = [_product([shape[a] for a in part]) for part in (current[:i], current[i:j], current[j:k], current[k:])]
        steps.append((sizes, [0, 2, 1, 3]))
        current = current[:i] + current[j:k] + current[i:j] + current[k:]
    return steps


def _transposes(graph: Graph) -> list[Site]:
    return [Site(n.name, refused="" if graph.static_shape(n.input[0]) else "the input's shape is not static")
            for n in graph.nodes if n.op_type == "Transpose" and _high(graph, n)]


@graph_pass("rank-transpose", "Transpose above rank 4 → the same permutation over merged axes at rank <= 4 (or a chain "
            "of rank-4 block swaps), between reshapes that collapse into their neighbours",
            "Transpose whose input or output has rank above 4 (einops rearranges, channel shuffles, head splits)",
            targets=RANK_TARGETS, find=_transposes, tidy=True)
def transpose(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    shape = graph.static_shape(node.input[0])
    perm = list(attribute(node, "perm", list(reversed(range(len(shape))))))
    merged, merged_perm = merged_permutation(shape, perm)
    edit = Edit(graph, node)
    x = edit.reshape(node.input[0], merged or [1])
    if len(merged) <= LIMIT:
        x = edit.op("Transpose", x, perm=merged_perm) if merged_perm != sorted(merged_perm) else x
    else:
        for sizes, swap in block_swaps(merged, merged_perm):
            x = edit.op("Transpose", edit.reshape(x, sizes), perm=swap)
    edit.finish(edit.reshape(x, graph.static_shape(node.output[0])))


# --- rank-merge ------------------------------------------------------------------------------------------------


def broadcast_groups(out: list[int], inputs: list[list[int]]) -> list[list[int]]:
    """Adjacent axes of ``out`` grouped so that within a group each input is full on all of them or 1 on all.

    An axis of size 1 in ``out`` fits any group. Inputs are right-aligned to ``out``.
    """
    padded = [[1] * (len(out) - len(s)) + list(s) for s in inputs]
    groups: list[list[int]] = []
    kinds: list[list[str]] = []  # per group, per input: "full", "one" or "any" so far
    for axis, size in enumerate(out):
        kind = ["any" if size == 1 else "full" if s[axis] == size else "one" for s in padded]
        if groups and all(a == "any" or b == "any" or a == b for a, b in zip(kinds[-1], kind)):
            groups[-1].append(axis)
            kinds[-1] = [b if a == "any" else a for a, b in zip(kinds[-1], kind)]
        else:
            groups.append([axis])
            kinds.append(kind)
    return groups


def _batch_apart(groups: list[list[int]], out: list[int], extra: int = 0) -> list[list[int]]:
    """A leading batch axis of 1 kept as an axis of its own where the rank allows (``extra`` axes come after the
    groups, as a MatMul's two): merged into the axis after it, that axis would lead the view, and ncnn, which has
    no batch axis, drops the leading axis (reports/ncnn)."""
    if out and out[0] == 1 and len(groups[0]) > 1 and len(groups) + 1 + extra <= LIMIT:
        return [[0], groups[0][1:], *groups[1:]]
    return groups


def _merged(shape: list[int], rank: int, groups: list[list[int]]) -> list[int]:
    padded = [1] * (rank - len(shape)) + list(shape)
    return [_product([padded[a] for a in group]) for group in groups]


def _reshaped(edit: Edit, name: str, shape: list[int]) -> str:
    value = edit.graph.constants.get(name)
    return edit.const(value.reshape(shape)) if value is not None else edit.reshape(name, shape)


def _fit(groups: list[list[int]], what: str, extra: int = 0) -> None:
    if len(groups) + extra > LIMIT:
        raise ValueError(f"{what} needs {len(groups) + extra} merged axes, more than {LIMIT}")


def _elementwise(edit: Edit, node, graph: Graph) -> None:
    out = graph.static_shape(node.output[0])
    data = [i for i in node.input if i and graph.shape(i)]  # rank-0 operands (Clip's bounds) broadcast as they are
    groups = _batch_apart(broadcast_groups(out, [graph.static_shape(i) for i in data]), out)
    _fit(groups, node.op_type)
    inputs = [_reshaped(edit, i, _merged(graph.static_shape(i), len(out), groups)) if i in data else i
              for i in node.input]
    attrs = {a.name: attribute(node, a.name, None) for a in node.attribute}
    edit.finish(edit.reshape(edit.op(node.op_type, *inputs, **attrs), out))


def _expand(edit: Edit, node, graph: Graph) -> None:
    out = graph.static_shape(node.output[0])
    groups = _batch_apart(broadcast_groups(out, [graph.static_shape(node.input[0])]), out)
    _fit(groups, "Expand")
    x = _reshaped(edit, node.input[0], _merged(graph.static_shape(node.input[0]), len(out), groups))
    edit.finish(edit.reshape(edit.op("Expand", x, edit.ints(_merged(out, len(out), groups))), out))


def _runs(chosen: set[int], sizes: list[int]) -> list[list[int]]:
    """Adjacent axes grouped into runs all in ``chosen`` or all outside it; a size-1 axis joins either."""
    return broadcast_groups(sizes, [[1 if a in chosen else d for a, d in enumerate(sizes)]])


def _reduction(edit: Edit, node, graph: Graph) -> None:
    shape = graph.static_shape(node.input[0])
    axes = set(graph.reduced_axes(node, len(shape)))
    groups = _batch_apart(_runs(axes, shape), shape)
    _fit(groups, node.op_type)
    merged_axes = [g for g, group in enumerate(groups) if any(a in axes for a in group)]
    x = edit.reshape(node.input[0], _merged(shape, len(shape), groups))
    edit.finish(edit.reshape(edit.reduce(node.op_type, x, merged_axes), graph.static_shape(node.output[0])))


def _around(shape: list[int], axis: int) -> list[int]:
    """(1, before, axis, after): the axis alone between the merged axes on either side, the batch of 1 apart."""
    return [1, _product(shape[:axis]), shape[axis], _product(shape[axis + 1:])]


def _axis_op(edit: Edit, node, graph: Graph) -> None:
    """Softmax, Concat, Split and Gather act on one axis: they run on (before, axis, after) views."""
    shape = graph.static_shape(node.input[0])
    axis = attribute(node, "axis", -1 if node.op_type.endswith("Softmax") else 0) % len(shape)
    inputs = [edit.reshape(i, _around(graph.static_shape(i), axis)) for i in node.input] if node.op_type == "Concat" \
        else [edit.reshape(node.input[0], _around(shape, axis)), *node.input[1:]]
    attrs = {a.name: attribute(node, a.name, None) for a in node.attribute if a.name != "axis"}
    outputs = edit.op(node.op_type, *inputs, axis=2, outputs=len(node.output), **attrs)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    edit.finish(*[edit.reshape(o, graph.static_shape(name)) for o, name in zip(outputs, node.output)])


def _slice(edit: Edit, node, graph: Graph) -> None:
    shape = graph.static_shape(node.input[0])
    axes_input = graph.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    axes = [int(a) % len(shape) for a in axes_input] if axes_input is not None else list(
        range(len(graph.constants[node.input[1]])))
    groups = _batch_apart(_split_chosen(_runs(set(axes), shape), set(axes)), shape)
    _fit(groups, "Slice")
    merged_axes = [next(g for g, group in enumerate(groups) if a in group) for a in axes]
    x = edit.reshape(node.input[0], _merged(shape, len(shape), groups))
    rest = list(node.input[1:3]) + [edit.ints(merged_axes)] + list(node.input[4:5])
    edit.finish(edit.reshape(edit.op("Slice", x, *rest), graph.static_shape(node.output[0])))


def _split_chosen(groups: list[list[int]], chosen: set[int]) -> list[list[int]]:
    """Runs of sliced axes split back into single axes: a slice cannot run over merged axes."""
    return [part for group in groups for part in ([[a] for a in group] if chosen & set(group) else [group])]


def _matmul(edit: Edit, node, graph: Graph) -> None:
    a, b = (graph.static_shape(i) for i in node.input)
    if min(len(a), len(b)) < 2:
        raise ValueError("MatMul with a vector operand has no merged form")
    out = graph.static_shape(node.output[0])
    batch = out[:-2]
    operands = [s[:-2] for s in (a, b)]
    groups = _batch_apart(broadcast_groups(batch, operands), batch, extra=2) if batch else []
    _fit(groups, "MatMul", extra=2)
    inputs = [_reshaped(edit, name, _merged(s[:-2], len(batch), groups) + s[-2:]) if len(s) > 2 else name
              for name, s in zip(node.input, (a, b))]
    edit.finish(edit.reshape(edit.op("MatMul", *inputs), out))


def _merge_form(node):
    if node.op_type in BROADCASTING or node.op_type in UNARY:
        return _elementwise
    if node.op_type in REDUCTIONS:
        return _reduction
    return {"Expand": _expand, "MatMul": _matmul, "Slice": _slice, **dict.fromkeys(AXIS_OPS, _axis_op)}.get(
        node.op_type)


def _merges(graph: Graph) -> list[Site]:
    sites = []
    for node in graph.nodes:
        if node.op_type in RESHAPES or node.op_type == "Transpose" or not _high(graph, node):
            continue
        static = all(graph.static_shape(n) for n in (*node.input, *node.output) if n and graph.shape(n) != [])
        refused = ("" if _merge_form(node) else f"{node.op_type} has no merged form") or (
            "" if static else "a shape is not static")
        sites.append(Site(node.name, refused=refused))
    return sites


@graph_pass("rank-merge", "elementwise ops, reductions, Softmax, MatMul, Concat, Split, Slice, Gather and Expand above "
            "rank 4 → the same op over merged axes at rank <= 4, between reshapes that collapse",
            "ops with an input or output above rank 4 (stacked branches, head axes); adjacent axes merge where "
            "every input treats them alike", targets=RANK_TARGETS, find=_merges, tidy=True)
def merge(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    _merge_form(node)(Edit(graph, node), node, graph)


# --- gather-slice ----------------------------------------------------------------------------------------------


def _steps(indices: np.ndarray, size: int) -> tuple[int, int, int] | None:
    """(start, end, step) of constant indices in arithmetic progression (negative ones counted from the end)."""
    flat = [int(i) % size for i in np.atleast_1d(indices)]
    step = flat[1] - flat[0] if len(flat) > 1 else 1
    if step <= 0 or any(b - a != step for a, b in zip(flat, flat[1:])):
        return None
    return flat[0], flat[-1] + 1, step


def _gathers(graph: Graph) -> list[Site]:
    sites = []
    for node in graph.nodes:
        if node.op_type != "Gather":
            continue
        indices, shape = graph.constants.get(node.input[1]), graph.shape(node.input[0])
        axis = attribute(node, "axis", 0)
        ok = indices is not None and indices.ndim <= 1 and shape and isinstance(shape[axis], int) and _steps(
            indices, shape[axis])
        sites.append(Site(node.name, refused="" if ok else "the indices are not constant, evenly spaced, at most 1-D"))
    return sites


@graph_pass("gather-slice", "Gather of constant, evenly spaced indices → Slice (and a Reshape dropping the axis for "
            "one index)", "Gather whose indices are a constant scalar or an evenly spaced 1-D constant",
            targets=lacking("Gather"), find=_gathers)
def gather(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    indices, shape = graph.constants[node.input[1]], graph.shape(node.input[0])
    axis = attribute(node, "axis", 0) % len(shape)
    start, end, step = _steps(indices, shape[axis])
    edit = Edit(graph, node)
    y = edit.op("Slice", node.input[0], edit.ints([start]), edit.ints([end]), edit.ints([axis]), edit.ints([step]))
    # One index drops the axis: Reshape copies the axes before it (0) and takes the static sizes after it.
    edit.finish(edit.reshape(y, [0] * axis + list(shape[axis + 1:])) if indices.ndim == 0 else y)
