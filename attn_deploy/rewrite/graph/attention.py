"""Attention that the runtime fuses: scaled dot-product attention in the exported graph, in a form that a
runtime runs as one kernel.

A site is ``softmax(a * (Q @ K^T) + b) @ V`` as torch exports it, found from its Softmax: a MatMul (a
scalar Mul or Div on Q or K folds into ``a``), scalar Mul or Div and at most one constant Add (the
bias ``b``, broadcast to (1 or H, S, L)), a Softmax over the last axis, and a MatMul with the softmax
as its first input, or, as EfficientViT's CGA writes it, ``V^T @ P^T`` (the transposed orientation).
Q, K and V are (B, H, S, d) with H heads, or (B, S, d) with one. MHSA (nn.MultiheadAttention after the
``mha`` rule, ultralytics' AIFI) gives multi-head sites; CGA one single-head site per cascaded head.

The forms, each a pass for each kind of site (``mhsa``: more than one head; ``cga``: one):

- ``contrib``: onnxruntime's ``com.microsoft.MultiHeadAttention``, query, key and value as (B, S, H*d),
  ``a`` as its scale, ``b`` as its attention_bias. onnxruntime 1.32's CPU provider runs it (so do its
  ``Attention`` with packed input weights; ``GroupQueryAttention`` computes causal attention, for decoders); OpenVINO
  2026.4's ONNX reader turns it into ScaledDotProductAttention. No TensorRT or NPU list has it.
- ``onnx``: the ONNX ``Attention`` op, which exists from opset 23: the model's opset is raised to 23
  (onnx's version converter) before the first site is rewritten. onnxruntime 1.32 (CPU) and OpenVINO
  2026.4 run it; TensorRT 10.15's ONNX parser lists it.

OpenVINO's CPU plugin fuses the MatMul-Softmax-MatMul of MHSA as exported (its runtime model shows one
``Subgraph`` holding both MatMuls and the Softmax) but not CGA's, with V^T transposed into the second
MatMul (nor ``(P @ V)^T``, V transposed before it): separate MatMul and Softmax layers. Both fused
forms reach it as ScaledDotProductAttention, which it fuses for either.

Every form is verified like every pass (the graph before and after, run in onnxruntime). Which form a
target gets, if any, follows ``FASTER``: a fused form is kept only where it measured faster.
"""

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from ...lint.support import CUSTOM, SUPPORT
from .graph import Edit, Graph, attribute
from .registry import Site, graph_pass

KINDS = ("mhsa", "cga")  # more than one head; one head (each cascaded head of CGA)
ONNX_ATTENTION_OPSET = 23
CONTRIB = "com.microsoft"

# Where each fused form ran faster than the plain graph, by form and kind of site: the targets that get it. From
# scripts/fused_attention_report.py (reports/fused-attention/, 2 threads, quiet machine): MHSA and ultralytics'
# AIFI alone at P4 and P5, CGA alone at P4 and P5, and YOLOv8n with each, interleaved with the plain export; a
# form is kept where it was 5 % faster at one placement at least and slower at none (bench.fused.choice).
# onnxruntime's MultiHeadAttention: 0.59x MHSA and 0.68x AIFI at P4, 0.86x and 0.96x at P5, within noise inside
# YOLOv8n. OpenVINO fuses the plain graph itself (every form within noise or up to 2 % slower); CGA's one-head
# sites ran up to 1.16x slower fused.
FASTER: dict[str, dict[str, tuple[str, ...]]] = {
    "contrib": {"mhsa": ("ort",), "cga": ()},
    "onnx": {"mhsa": (), "cga": ()},
}
# The targets whose runtime runs each form's op (support lists, lint/support.py).
RUNS = {
    "contrib": tuple(t for t, ops in CUSTOM.items() if "MultiHeadAttention" in ops.get(CONTRIB, ())),
    "onnx": tuple(t for t, ops in SUPPORT.items() if "Attention" in ops),
}


@dataclass
class Sdpa:
    """One attention site: the nodes it spans and what they compute."""

    first: str  # MatMul node: Q @ K^T
    softmax: str
    last: str  # MatMul node: P @ V, or V^T @ P^T
    q: str  # (B, H, S, dk) or (B, S, dk)
    kt: str  # K^T: (B, H, dk, L) or (B, dk, L)
    v: str  # V: (B, H, L, dv), or V^T: (B, H, dv, L) in the transposed orientation (rank 3 without H)
    transposed: bool
    scale: float
    bias: np.ndarray | None  # broadcast to (1, H or 1, S, L)
    heads: int
    dims: tuple  # (S, L, dk, dv)


def _scalar(graph: Graph, name: str) -> float | None:
    value = graph.constants.get(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _only_consumer(graph: Graph, name: str):
    consumers = graph.consumers[name]
    return consumers[0] if len(consumers) == 1 and name not in graph.outputs else None


def _logits(graph: Graph, name: str) -> tuple | None:
    """Walk back from the softmax input through Mul, Div and Add by constants to a MatMul: (it, a, b) with
    logits = a * (Q @ K^T) + b, b the reason where the steps cannot be folded so; None where no MatMul is there."""
    steps, node = [], graph.producers.get(name)
    while node is not None and node.op_type in ("Mul", "Div", "Add"):
        steps.append(node)
        chain = [i for i in node.input if i not in graph.constants]
        node = graph.producers.get(chain[0]) if len(chain) == 1 else None
    if node is None or node.op_type != "MatMul":
        return None
    return node, *_folded(graph, steps)


def _folded(graph: Graph, steps: list) -> tuple[float, np.ndarray | str | None]:
    """(a, b) of the steps, from the softmax back: at ``x * c`` the scale takes c, at ``x + c`` the bias is the
    scale so far times c; b is the reason where they cannot be folded."""
    scale, bias = 1.0, None
    for node in steps:
        chain, constant = (next(i for i in node.input if (i in graph.constants) == const) for const in (False, True))
        if _only_consumer(graph, chain) is not node:
            return scale, "a step between the MatMul and the softmax is also used elsewhere"
        if node.op_type == "Add":
            if bias is not None:
                return scale, "two additions on the logits"
            bias = scale * graph.constants[constant].astype(np.float64)
            continue
        factor = _scalar(graph, constant)
        if factor is None or (node.op_type == "Div" and node.input[0] != chain):
            return scale, f"{node.op_type} on the logits by a non-scalar"
        scale = scale * factor if node.op_type == "Mul" else scale / factor
    return scale, bias


def _unscaled(graph: Graph, name: str) -> tuple[str, float]:
    """A scalar Mul or Div on Q or K folded into the scale: (the tensor before it, its factor)."""
    node = graph.producers.get(name)
    if node is not None and node.op_type in ("Mul", "Div"):
        for i, other in ((0, 1), (1, 0)):
            factor = _scalar(graph, node.input[other])
            if factor is not None and node.input[i] not in graph.constants and (node.op_type == "Mul" or i == 0):
                return node.input[i], factor if node.op_type == "Mul" else 1 / factor
    return name, 1.0


def _values(graph: Graph, softmax) -> tuple[object, str, bool] | None:
    """The MatMul applying the softmax to V, its only consumer: (it, V or V^T, transposed?), or None."""
    user = _only_consumer(graph, softmax.output[0])
    if user is not None and user.op_type == "MatMul" and user.input[0] == softmax.output[0]:
        return user, user.input[1], False
    if user is not None and user.op_type == "Transpose":
        rank = len(graph.shape(user.input[0]) or [])
        swap = list(range(rank - 2)) + [rank - 1, rank - 2]
        last = _only_consumer(graph, user.output[0])
        if list(attribute(user, "perm", [])) == swap and last is not None and last.op_type == "MatMul" and \
                last.input[1] == user.output[0]:
            return last, last.input[0], True
    return None


def _bias(bias: np.ndarray | None, heads: int, s: int, length: int) -> np.ndarray | None:
    """The bias as (1, H or 1, S, L), the attention_bias and attn_mask layout; ValueError where it does not fit."""
    if bias is None:
        return None
    shape = (1,) * (4 - bias.ndim) + bias.shape
    if len(shape) != 4 or any(d not in (1, want) for d, want in zip(shape, (1, heads, s, length))):
        raise ValueError(f"bias of shape {bias.shape} does not broadcast to (1, {heads}, {s}, {length})")
    return np.ascontiguousarray(np.broadcast_to(bias.reshape(shape), (1, shape[1], s, length)), dtype=np.float32)


def _skeleton(graph: Graph, softmax) -> tuple | None:
    """(first MatMul, a, b, last MatMul, V, transposed) where ``softmax`` sits between two MatMuls, or None."""
    shape = graph.shape(softmax.input[0]) or []
    if len(shape) not in (3, 4) or attribute(softmax, "axis", -1) % len(shape) != len(shape) - 1:
        return None
    logits, applied = _logits(graph, softmax.input[0]), _values(graph, softmax)
    return None if logits is None or applied is None else (*logits, *applied)


def _same_batch(*batches: list) -> bool:
    """Whether the batch (and head) axes agree: equal sizes, or a symbolic batch in all (a dynamic export names
    each tensor's batch apart)."""
    (batch, *heads), rest = batches[0], batches[1:]
    same = all(b[0] == batch for b in rest) if isinstance(batch, int) else all(isinstance(b[0], str) for b in rest)
    return same and all(isinstance(h, int) and b[1:] == heads for b in rest for h in heads)


def match(graph: Graph, softmax) -> Sdpa | str | None:
    """The attention site around ``softmax``: None where it is no MatMul-Softmax-MatMul, the reason where the
    fused forms cannot take it."""
    found = _skeleton(graph, softmax)
    if found is None:
        return None
    first, scale, bias, last, v, transposed = found
    if isinstance(bias, str):
        return bias
    if _only_consumer(graph, first.output[0]) is None:
        return "the logits are also used elsewhere"
    q, q_factor = _unscaled(graph, first.input[0])
    kt, k_factor = _unscaled(graph, first.input[1])
    rank = len(graph.shape(softmax.input[0]))
    shapes = [graph.shape(t) for t in (q, kt, v)]
    if any(s is None or len(s) != rank for s in shapes):
        return "Q, K and V are not all of the softmax's rank"
    (*batch_q, s, dk), (*batch_k, dk2, length), (*batch_v, a, b) = shapes
    dv, length_v = (a, b) if transposed else (b, a)
    if not _same_batch(batch_q, batch_k, batch_v) or dk != dk2 or length_v != length or not all(
            isinstance(d, int) for d in (s, length, dk, dv)):
        return "Q, K and V do not fit one another with static sizes (broadcast batch or head axes)"
    heads = batch_q[1] if rank == 4 else 1
    try:
        bias = _bias(bias, heads, s, length)
    except ValueError as e:
        return str(e)
    return Sdpa(first.name, softmax.name, last.name, q, kt, v, transposed, scale * q_factor * k_factor, bias, heads,
                (s, length, dk, dv))


def kind_of(graph: Graph, softmax) -> str:
    shape = graph.shape(softmax.input[0])
    return "mhsa" if len(shape) == 4 and shape[1] != 1 else "cga"


def sites(graph: Graph, kind: str) -> list[Site]:
    """The attention sites of ``kind`` (refused ones with the reason), each named by its softmax."""
    found = []
    for node in graph.nodes:
        if node.op_type != "Softmax" or kind_of(graph, node) != kind or (site := match(graph, node)) is None:
            continue
        found.append(Site(node.name, refused=site) if isinstance(site, str) else Site(node.name, {"sdpa": site}))
    return found


def _swap(rank: int) -> list[int]:
    return list(range(rank - 2)) + [rank - 1, rank - 2]


def _tokens(edit: Edit, x: str, perm: list[int]) -> str:
    """Rank-4 ``x`` as (B, S, H*d): ``perm`` takes it to (B, S, H, d)."""
    return edit.reshape(edit.op("Transpose", x, perm=perm), [0, 0, -1])


def _inputs_3d(edit: Edit, site: Sdpa) -> tuple[str, str, str]:
    """Q, K and V as (B, S, H*d) for MultiHeadAttention."""
    if len(edit.graph.shape(site.q)) == 3:
        k = edit.op("Transpose", site.kt, perm=[0, 2, 1])
        v = edit.op("Transpose", site.v, perm=[0, 2, 1]) if site.transposed else site.v
        return site.q, k, v
    q = _tokens(edit, site.q, [0, 2, 1, 3])
    k = _tokens(edit, site.kt, [0, 3, 1, 2])
    v = _tokens(edit, site.v, [0, 3, 1, 2] if site.transposed else [0, 2, 1, 3])
    return q, k, v


def _output_from_3d(edit: Edit, y: str, site: Sdpa, rank: int) -> str:
    """The site's output from (B, S, H*dv): (B, H, S, dv) or (B, S, dv), or their transposes."""
    if rank == 3:
        return edit.op("Transpose", y, perm=[0, 2, 1]) if site.transposed else y
    s, _, _, dv = site.dims
    heads = edit.reshape(y, [0, s, site.heads, dv])
    return edit.op("Transpose", heads, perm=[0, 2, 3, 1] if site.transposed else [0, 2, 1, 3])


def _typed(graph: Graph, name: str, shape: list) -> None:
    """Declare a float tensor's shape: shape inference knows no com.microsoft op, and later passes need shapes."""
    graph.model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))


def _rewrite_contrib(graph: Graph, site: Site) -> None:
    sdpa: Sdpa = site.detail["sdpa"]
    last = graph.node(sdpa.last)
    rank = len(graph.shape(sdpa.q))
    edit = Edit(graph, last)
    q, k, v = _inputs_3d(edit, sdpa)
    bias = edit.const(sdpa.bias) if sdpa.bias is not None else ""
    y = edit.op("MultiHeadAttention", q, k, v, "", "", bias, num_heads=sdpa.heads, scale=sdpa.scale, domain=CONTRIB)
    fused = edit.new[-1]
    edit.finish(_output_from_3d(edit, y, sdpa, rank))
    s, _, _, dv = sdpa.dims
    _typed(graph, fused.output[0], [graph.shape(sdpa.q)[0], s, sdpa.heads * dv])
    if not any(o.domain == CONTRIB for o in graph.model.opset_import):
        graph.model.opset_import.append(helper.make_opsetid(CONTRIB, 1))


def _rewrite_onnx(graph: Graph, site: Site) -> None:
    if graph.opset < ONNX_ATTENTION_OPSET:
        graph.raise_opset(ONNX_ATTENTION_OPSET)
    sdpa: Sdpa = site.detail["sdpa"]
    last = graph.node(sdpa.last)
    rank = len(graph.shape(sdpa.q))
    edit = Edit(graph, last)
    k = edit.op("Transpose", sdpa.kt, perm=_swap(rank))
    v = edit.op("Transpose", sdpa.v, perm=_swap(rank)) if sdpa.transposed else sdpa.v
    bias = edit.const(sdpa.bias) if sdpa.bias is not None else ""
    heads = {"q_num_heads": 1, "kv_num_heads": 1} if rank == 3 else {}
    y = edit.op("Attention", sdpa.q, k, v, *([bias] if bias else []), scale=sdpa.scale, **heads)
    edit.finish(edit.op("Transpose", y, perm=_swap(rank)) if sdpa.transposed else y)


FORMS = {
    "contrib": (_rewrite_contrib, "com.microsoft.MultiHeadAttention (query, key, value as (B, S, H*d); the scale; "
                                  "the bias as attention_bias)"),
    "onnx": (_rewrite_onnx, f"the ONNX Attention op (the model's opset raised to {ONNX_ATTENTION_OPSET})"),
}
MATCHES = {
    "mhsa": "softmax(a * Q @ K^T + b) @ V over (B, H, S, d) with H > 1: MatMul, scalar Mul/Div, a constant Add, "
            "Softmax over the last axis, MatMul",
    "cga": "softmax(a * Q @ K^T + b) @ V (or V^T @ P^T, as CGA writes it) over (B, S, d): one head",
}


def _register(form: str, kind: str) -> None:
    rewrite, fixes = FORMS[form]
    wanted = tuple(t for t in FASTER[form][kind] if t in RUNS[form])
    graph_pass(f"fused-{form}-{kind}", f"scaled dot-product attention → {fixes}", MATCHES[kind], targets=wanted,
               find=lambda graph: sites(graph, kind), tidy=True, every=True)(rewrite)


for form_ in FORMS:
    for kind_ in KINDS:
        _register(form_, kind_)
