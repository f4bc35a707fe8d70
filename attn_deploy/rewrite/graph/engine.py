"""Apply the graph passes that targets need to an exported model, each verified in onnxruntime.

A pass's sites are grouped by the module path of the node each starts from: one report row per
module. The groups are rewritten together, and the graph before and after the pass runs in
onnxruntime (unoptimised: the graph as written) on the verification feeds (the parity inputs), so
that each row's error is its own pass's. Every output must agree within
``TOLERANCE x max(1, max|output|)``, or within the fp32 noise of the graph itself, whichever is
larger: how far onnxruntime's own graph optimisations (fusions that reassociate fp32 arithmetic)
move the exported graph's outputs on the same feed. A fused normalisation and its primitives round
differently, and through a detector that difference can exceed 1e-6 relative while staying well
under what the runtime's own fusions do. What the passes add up to is checked afterwards, as every
export is: against the original PyTorch model. When a group of sites fails, each is tried alone and
those that pass are kept; a refused group's row says why.
"""

import collections
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from .. import verify as verification
from ..engine import LayerRewrite
from .graph import Graph
from .registry import GraphPass, Site, passes_for


@dataclass
class GraphRewritten:
    model: onnx.ModelProto
    layers: list[LayerRewrite]


def run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], optimised: bool = False) -> list[list[np.ndarray]]:
    """``model``'s outputs on each feed: onnxruntime CPU, unoptimised (the graph as written) unless ``optimised``,
    on one quiet thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimised else
                                        ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def _difference(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    return verification.difference([torch.from_numpy(x) for x in a], [torch.from_numpy(y) for y in b])


@dataclass
class Reference:
    """The graph's outputs on the feeds before the pass being verified, and the exported graph's fp32 noise on
    each: how far onnxruntime's own optimisations move its outputs."""

    outputs: list[list[np.ndarray]]
    noise: list[float]

    @classmethod
    def of(cls, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> "Reference":
        outputs = run(model, feeds)
        return cls(outputs, [_difference(o, p)[0] for o, p in zip(outputs, run(model, feeds, optimised=True))])

    def check(self, outputs: list[list[np.ndarray]]) -> tuple[float, str]:
        """The largest output difference over the feeds, and a note where it passed by the noise alone;
        ValueError when a difference exceeds both bounds."""
        worst, noted = 0.0, ""
        for ref, out, noise in zip(self.outputs, outputs, self.noise):
            diff, scale = _difference(ref, out)
            bound = verification.TOLERANCE * max(1.0, scale)
            if diff > max(bound, noise):
                raise ValueError(f"max abs error {diff:.3g} exceeds {verification.TOLERANCE:g} x max(1, {scale:.3g}) "
                                 f"and the graph's own fp32 noise {noise:.3g}")
            if diff > bound:
                noted = f"above {verification.TOLERANCE:g} relative, within the graph's own fp32 noise {noise:.3g}"
            worst = max(worst, diff)
        return worst, noted


def _ops(graph: Graph, scope: str) -> dict[str, int]:
    counts = collections.Counter(n.op_type for n in graph.nodes if graph.scope(n) == scope)
    return dict(sorted(counts.items()))


class _Pass:
    """One pass over the graph so far: its sites by module, rewritten, verified, kept or refused."""

    def __init__(self, graph: Graph, rule: GraphPass, reference: Callable[[], Reference], feeds,
                 classes: dict[str, str], note: str):
        self.graph, self.rule, self.reference, self.feeds, self.note = graph, rule, reference, feeds, note
        self.outputs: list[list[np.ndarray]] = []  # the last candidate's
        self.groups: dict[str, list[Site]] = collections.defaultdict(list)
        for site in rule.find(graph):
            self.groups[graph.scope(graph.node(site.node))].append(site)
        self.rows = {scope: LayerRewrite(scope or "(graph)", classes.get(scope, ""), rule.name, rule.fixes, False,
                                         ops_before=_ops(graph, scope), note=note) for scope in self.groups}

    def _try(self, scopes: list[str]) -> tuple[Graph | None, float | None, str]:
        """The graph with the sites of ``scopes`` rewritten, its verified error and its note; or None and why not."""
        candidate = Graph(self.graph.model)
        try:
            for scope in scopes:
                for site in self.groups[scope]:
                    self.rule.rewrite(candidate, site)
            candidate.prune()
            candidate.refresh()
            if self.rule.tidy:
                candidate.tidy()
            self.outputs = run(candidate.model, self.feeds)
            return candidate, *self.reference().check(self.outputs)
        except Exception as e:
            return None, None, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"

    def _keep(self, candidate: Graph, scopes: list[str], error: float, note: str) -> None:
        self.graph = candidate
        self.reference().outputs = self.outputs  # the next pass is verified against this graph
        for scope in scopes:
            row = self.rows[scope]
            row.applied, row.max_abs, row.ops_after = True, error, _ops(candidate, scope)
            row.note = "; ".join(filter(None, [row.note, note]))

    def _refuse(self, scope: str, reason: str) -> None:
        self.rows[scope].note = "; ".join(filter(None, [self.note, f"not applied: {reason}"]))

    def apply(self) -> Graph:
        ready = []
        for scope, sites in self.groups.items():
            refused = next((s.refused for s in sites if s.refused), "")
            self._refuse(scope, refused) if refused else ready.append(scope)
        if not ready:
            return self.graph
        candidate, error, note = self._try(ready)
        if candidate is not None:
            self._keep(candidate, ready, error, note)
        elif len(ready) == 1:
            self._refuse(ready[0], note)
        else:  # find which modules' sites fail: each alone, on the graph so far
            for scope in ready:
                candidate, error, note = self._try([scope])
                self._keep(candidate, [scope], error, note) if candidate is not None else self._refuse(scope, note)
        return self.graph


def apply(model: onnx.ModelProto, targets, feeds: list[dict[str, np.ndarray]], classes: dict[str, str] | None = None,
          passes: list[GraphPass] | None = None, note: str = "", readers=None) -> GraphRewritten:
    """``model`` with every verified pass that ``targets`` need (or ``passes``) applied, and a row per module.

    ``classes`` maps module paths to class names for the report; ``note`` goes into every row; ``readers`` are the
    targets that will read the graph, where more than ``targets`` (``passes_for``).
    """
    reference = functools.cache(lambda: Reference.of(model, feeds))  # only when a pass has sites to verify
    graph, layers = Graph(model), []
    for rule in passes if passes is not None else passes_for(targets, readers):
        done = _Pass(graph, rule, reference, feeds, classes or {}, note)
        graph = done.apply()
        layers += done.rows.values()
    return GraphRewritten(graph.model, layers)


def apply_file(source: Path, output: Path, targets, feeds: list[dict[str, np.ndarray]],
               classes: dict[str, str] | None = None, note: str = "", readers=None) -> list[LayerRewrite]:
    """Apply the passes ``targets`` need to the ONNX file ``source`` and write the result to ``output`` atomically."""
    from ...files import write_atomic

    done = apply(onnx.load(source), targets, feeds, classes, note=note, readers=readers)
    if output != source or any(layer.applied for layer in done.layers):
        write_atomic(output, lambda tmp: onnx.save(done.model, tmp))
    return done.layers
