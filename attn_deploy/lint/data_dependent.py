"""What cannot be static: routing by computed indices (TopK, GatherElements) and sampling at computed
positions (GridSample, DeformConv). No rewrite can replace them, so the lint names the PyTorch module
(from the node's scope) and the op, and says which targets run it and which cannot. A finding is an
error for a target that cannot run it, a warning for one that can.
"""

import collections

import numpy as np

from . import Finding, names
from .support import (CONVERTED, DATA_DEPENDENT, DEFORMCONV_SYMMETRIC_PADS, GRIDSAMPLE_MIN_OPSET, GRIDSAMPLE_RANK,
                      SUPPORT, TOPK_MAX_K)


def _topk(target: str, nodes, values: dict[str, np.ndarray]) -> tuple[bool, str]:
    limit = TOPK_MAX_K.get(target)
    ks = [values.get(n.input[1]) for n in nodes]
    if limit is None:
        return True, ""
    if any(k is None for k in ks):
        return False, "k must be a constant"
    largest = max(int(np.max(k)) for k in ks)
    return largest <= limit, f"k={largest}, at most {limit}"


def _grid_sample(target: str, nodes, shapes: dict[str, list], opset: int) -> tuple[bool, str]:
    if opset < GRIDSAMPLE_MIN_OPSET:
        return False, f"GridSample needs opset {GRIDSAMPLE_MIN_OPSET}"
    rank = GRIDSAMPLE_RANK.get(target)
    if rank is not None and any(len(shapes.get(n.input[0], [])) != rank for n in nodes):
        return False, f"{rank}-D input only"
    return True, f"opset {GRIDSAMPLE_MIN_OPSET}+" + (f", {rank}-D input" if rank else "")


def _deform_conv(target: str, nodes) -> tuple[bool, str]:
    if target not in DEFORMCONV_SYMMETRIC_PADS:
        return True, ""
    for node in nodes:
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
        if pads[: len(pads) // 2] != pads[len(pads) // 2:]:
            return False, "pads must be symmetric"
    return True, "symmetric pads"


def _runs(target: str, op: str, nodes, shapes, values, opset: int) -> tuple[bool, str]:
    """Whether ``target`` runs ``op`` as ``nodes`` use it, and under which condition."""
    if op in CONVERTED.get(target, {}):
        return True, CONVERTED[target][op]
    if op not in SUPPORT[target]:
        return False, ""
    if op == "TopK":
        return _topk(target, nodes, values)
    if op == "GridSample":
        return _grid_sample(target, nodes, shapes, opset)
    if op == "DeformConv":
        return _deform_conv(target, nodes)
    return True, ""


def _listed(targets: dict[str, str]) -> str:
    return ", ".join(f"{t} ({why})" if why else t for t, why in targets.items())


def data_dependent(graph, target: str, shapes: dict[str, list], values: dict[str, np.ndarray],
                   opset: int) -> list[Finding]:
    """One finding per module and data-dependent op: what it computes, who runs it, who cannot."""
    from ..exporters.onnx import node_scopes

    scopes = node_scopes(graph)
    sites = collections.defaultdict(list)
    for node in graph.node:
        if node.op_type in DATA_DEPENDENT:
            sites[(scopes[node.name], node.op_type)].append(node)
    findings = []
    for (module, op), nodes in sites.items():
        verdicts = {t: _runs(t, op, nodes, shapes, values, opset) for t in SUPPORT}
        can = {t: why for t, (ok, why) in verdicts.items() if ok}
        cannot = {t: why for t, (ok, why) in verdicts.items() if not ok}
        detail = (f"{module or 'the graph'} ({op}, {len(nodes)} node(s)): {DATA_DEPENDENT[op]} cannot be static; "
                  f"cannot run on: {_listed(cannot) or 'none'}; runs on: {_listed(can) or 'none'}")
        findings.append(Finding("data-dependent", detail, names(nodes), "warning" if verdicts[target][0] else "error",
                                module))
    return findings
