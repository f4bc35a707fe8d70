"""Applying op rules: a module keeps its own code and runs with static implementations of some ops."""

from torch import nn
from torch.overrides import TorchFunctionMode

from .registry import OpRule


class StaticOps(TorchFunctionMode):
    """Dispatches the calls that ``rules`` intercept to their static implementations.

    ``memo`` lives for one forward call, for rules that pair two calls (a sum, then its division);
    ``changed`` names the rules that changed a call.
    """

    def __init__(self, rules: list[OpRule]):
        super().__init__()
        self.handlers = {op: rule for rule in rules for op in rule.intercepts}
        self.memo: dict = {}
        self.changed: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        rule = self.handlers.get(getattr(func, "__name__", ""))
        if rule is None:
            return func(*args, **(kwargs or {}))
        out, changed = rule.static(func, args, kwargs or {}, self.memo)
        if changed:
            self.changed.add(rule.name)
        return out


class OpRewrite(nn.Module):
    """``module`` run with the static ops of ``rules``: what the tracer sees, and so what ONNX gets."""

    def __init__(self, module: nn.Module, rules: list[OpRule]):
        super().__init__()
        self.module = module
        self.rules = rules

    def forward(self, *args, **kwargs):
        with StaticOps(self.rules):
            return self.module(*args, **kwargs)
