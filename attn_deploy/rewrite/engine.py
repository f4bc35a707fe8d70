"""Plan, build, verify and apply the rewrites of one model at its export shape.

The model runs once on a real image at the export shape (``capture``); each module is matched
against the module rules (by type or structure) and, failing those, its own forward's ops against
the op rules. Every replacement is verified against the original module (``verify``); one that
fails is not applied and the report says why. Where eager PyTorch's in-place overlapping slice
assignments disagree with true shifts, the report names the module and the true-shift
computation becomes the reference for it.
"""

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import AttnDeployError
from . import verify as verification
from .capture import OVERLAPPING_ASSIGNMENT, capture
from .ops import OpRewrite, StaticOps
from .registry import RULES, LayerCall, ModuleRule, OpRule, Rule


@dataclass
class LayerRewrite:
    path: str
    module: str
    rule: str
    fixes: str
    applied: bool
    max_abs: float | None = None
    ops_before: dict[str, int] | None = None
    ops_after: dict[str, int] | None = None
    note: str = ""


@dataclass
class RewriteReport:
    imgsz: tuple[int, int]
    batch: int
    dynamic: bool
    target: str
    tolerance: float = verification.TOLERANCE
    layers: list[LayerRewrite] = field(default_factory=list)
    divergent: dict[str, str] = field(default_factory=dict)  # module path -> why eager cannot be the reference
    graph: list[LayerRewrite] = field(default_factory=list)  # graph passes on the export, verified in onnxruntime

    @property
    def applied(self) -> list[LayerRewrite]:
        return [layer for layer in self.layers if layer.applied]

    @property
    def reference(self) -> str:
        """The semantics parity must check against: ``eager``, or ``true-shift`` where eager diverges."""
        return "true-shift" if self.divergent else "eager"


@dataclass
class Rewritten:
    model: nn.Module
    report: RewriteReport


def example_input(imgsz: tuple[int, int], batch: int) -> torch.Tensor:
    """bus.jpg letterboxed to the export shape: activations as a real image produces them."""
    from ultralytics.utils import ASSETS

    from ..parity import letterbox_image

    return torch.from_numpy(letterbox_image(ASSETS / "bus.jpg", imgsz)).expand(batch, -1, -1, -1).contiguous()


def _divergence(model: nn.Module, calls: dict[str, LayerCall]) -> dict[str, str]:
    found = {}
    for path, call in calls.items():
        if OVERLAPPING_ASSIGNMENT not in call.ops:
            continue
        module = model.get_submodule(path)
        where = f"{path} ({type(module).__name__})"
        try:
            eager = verification.run64(module, call.args, call.kwargs)
            diff, _ = verification.difference(eager, verification.run64(module, call.args, call.kwargs, True))
        except Exception as e:
            found[path] = f"{where}: in-place overlapping slice assignments that cannot be checked: {e}"
            continue
        if diff > 0:
            found[path] = (f"{where}: eager PyTorch's in-place overlapping slice assignments differ from true "
                           f"shifts by up to {diff:.3g}; true shifts are the reference there")
    return found


def _plan(model: nn.Module, calls: dict[str, LayerCall], rules: list[Rule]) -> list[tuple[str, list[Rule]]]:
    module_rules = [r for r in rules if isinstance(r, ModuleRule)]
    op_rules = [r for r in rules if isinstance(r, OpRule)]
    plan, covered = [], ()
    for path, module in model.named_modules():
        if path not in calls or path.startswith(covered):
            continue
        matched = next((r for r in module_rules if r.applies(module)), None)
        if matched:
            plan.append((path, [matched]))
            covered += () if matched.wraps else (f"{path}.",)
        elif found := [r for r in op_rules if set(r.ops) & calls[path].ops]:
            plan.append((path, found))
    return plan


def _changing(module: nn.Module, call: LayerCall, rules: list[OpRule]) -> list[OpRule]:
    """The op rules that change at least one call of ``module`` at the export shape.

    Where the trial run fails, every rule stays a candidate: its verification reports the failure.
    """
    mode = StaticOps(rules)
    try:
        with torch.no_grad(), mode:
            copy.deepcopy(module)(*call.args, **call.kwargs)
    except Exception:
        return rules
    return [r for r in rules if r.name in mode.changed]


def _build(module: nn.Module, call: LayerCall, rule: Rule) -> nn.Module:
    if isinstance(rule, ModuleRule):
        return rule.build(copy.deepcopy(module), call)
    return OpRewrite(copy.deepcopy(module), [rule])


class _Layer:
    """Rewrites one module: each candidate rule built and verified on its own, then the passing ones combined.

    Replacements are built from ``current``, the module with its children already rewritten, and
    verified against ``module``, the original.
    """

    def __init__(self, path: str, module: nn.Module, current: nn.Module, call: LayerCall, dynamic: bool,
                 true_shift: bool):
        self.path, self.module, self.current, self.call = path, module, current, call
        self.dynamic, self.true_shift = dynamic, true_shift

    def _try(self, rule: Rule) -> LayerRewrite:
        layer = LayerRewrite(self.path, type(self.module).__name__, rule.name, rule.fixes, applied=False)
        try:
            layer.max_abs = verification.verify(self.module, _build(self.current, self.call, rule), self.call,
                                                self.dynamic, self.true_shift)
            layer.applied = True
        except Exception as e:
            layer.note = f"not applied: {type(e).__name__}: {e}"
        return layer

    def rewrite(self, rules: list[Rule]) -> tuple[nn.Module | None, list[LayerRewrite]]:
        if all(isinstance(r, OpRule) for r in rules):
            rules = _changing(self.current, self.call, rules)
        layers = [self._try(rule) for rule in rules]
        passing = [rule for rule, layer in zip(rules, layers) if layer.applied]
        if not passing:
            return None, layers
        if isinstance(passing[0], ModuleRule):
            return _build(self.current, self.call, passing[0]), layers
        return OpRewrite(self.current, passing), layers


def _keep_routing(original: nn.Module, replacement: nn.Module) -> nn.Module:
    for attr in ("i", "f", "type", "np"):  # ultralytics' layer routing reads these
        if hasattr(original, attr):
            setattr(replacement, attr, getattr(original, attr))
    # A new module starts in training mode, and torch.onnx.export restores that mode into every child it wraps.
    return replacement.train(original.training)


def _count_ops(report: RewriteReport, replaced: dict[str, nn.Module], original: nn.Module,
               calls: dict[str, LayerCall], opset: int) -> None:
    from ..exporters.onnx import op_counts

    for layer in report.applied:
        call = calls[layer.path]
        try:
            layer.ops_before = op_counts(original.get_submodule(layer.path), call, opset, report.dynamic)
        except Exception as e:
            layer.note = f"the original does not export alone: {e}"
        try:
            layer.ops_after = op_counts(replaced[layer.path], call, opset, report.dynamic)
        except AttnDeployError as e:
            module = original.get_submodule(layer.path)
            raise AttnDeployError(f"ONNX export failed (opset {opset}) for {layer.path} ({type(module).__name__}), "
                                  f"rewritten by {layer.rule}: {e}") from e


def rewrite(model: nn.Module, imgsz: tuple[int, int] = (640, 640), batch: int = 1, dynamic: bool = False,
            target: str = "onnx", opset: int = 18, count_ops: bool = True,
            example: torch.Tensor | None = None) -> Rewritten:
    """A copy of ``model`` with every verified rewrite applied, and the report of what was done.

    ``example`` replaces the default input (bus.jpg at ``imgsz``, ``batch`` times) for models
    that do not take images.
    """
    original = copy.deepcopy(model).float().eval()
    if example is not None:
        batch, imgsz = example.shape[0], tuple(example.shape[-2:])
    example = example if example is not None else example_input(imgsz, batch)
    try:
        calls = capture(original, example)
    except Exception as e:
        raise AttnDeployError(f"the model does not run on an input of shape {tuple(example.shape)}: "
                              f"{type(e).__name__}: {e}") from e
    report = RewriteReport(imgsz, batch, dynamic, target, divergent=_divergence(original, calls))
    rewritten = copy.deepcopy(original)
    rules = [r for r in RULES.values() if r.wanted(target, dynamic)]
    replaced: dict[str, nn.Module] = {}
    for path, candidates in reversed(_plan(original, calls, rules)):  # children before their parents
        true_shift = any(p == path or p.startswith(f"{path}.") for p in report.divergent)
        module = original.get_submodule(path)
        layer = _Layer(path, module, rewritten.get_submodule(path), calls[path], dynamic, true_shift)
        replacement, layers = layer.rewrite(candidates)
        report.layers = layers + report.layers
        if replacement is not None:
            replaced[path] = _keep_routing(module, replacement)
            rewritten.set_submodule(path, replaced[path])
    if count_ops:
        _count_ops(report, replaced, original, calls, opset)
    return Rewritten(rewritten, report)
