"""The graph-pass registry: ONNX-level rules, registered by decorator like the module rules.

A pass finds its sites in an exported graph (``find``) and rewrites one site in place
(``rewrite``). Each pass names the targets that need it, in the lint's terms (ort, openvino, trt,
npu): a pass that only trades a fused op for primitives is needed only where the target's support
list lacks the fused op. A site that the pass recognises but cannot rewrite carries the reason.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from ..registry import Rule
from .graph import Graph


@dataclass
class Site:
    """One place a pass rewrites: the node it starts from (by name), and what ``find`` learned about it."""

    node: str
    detail: dict = field(default_factory=dict)
    refused: str = ""  # why the pass recognises the site but cannot rewrite it


@dataclass(frozen=True, kw_only=True)
class GraphPass(Rule):
    find: Callable[[Graph], list[Site]]
    rewrite: Callable[[Graph, Site], None]
    tidy: bool = False  # collapse the transpose and reshape chains the rewrites leave (see Graph.tidy)
    every: bool = False  # puts in ops that only some runtimes run, or run faster: only where every reader wants it

    def wanted(self, target: str, dynamic: bool = False) -> bool:
        return target in self.targets


PASSES: dict[str, GraphPass] = {}


def graph_pass(name: str, fixes: str, matches: str, targets: tuple[str, ...], find: Callable[[Graph], list[Site]],
               tidy: bool = False, every: bool = False):
    """Register ``rewrite(graph, site)`` for the sites ``find(graph)`` returns, needed by ``targets``."""

    def register(rewrite):
        PASSES[name] = GraphPass(name=name, fixes=fixes, matches=matches, targets=targets, find=find, rewrite=rewrite,
                                 tidy=tidy, every=every)
        return rewrite

    return register


def lacking(op: str) -> tuple[str, ...]:
    """The targets whose support list lacks ``op``: those that need it turned into other ops."""
    from ...lint import SUPPORT

    return tuple(t for t, ops in SUPPORT.items() if op not in ops)


def passes_for(targets, readers=None) -> list[GraphPass]:
    """The passes any of ``targets`` needs, in registration order (the order they run in). A pass marked ``every``
    runs only where all ``readers`` want it (default: ``targets``; a file that others are built from has those too)."""
    readers = list(targets if readers is None else readers)
    return [p for p in PASSES.values()
            if (readers and all(p.wanted(t) for t in readers) if p.every else any(p.wanted(t) for t in targets))]
