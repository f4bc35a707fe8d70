"""The rule registry, after MMDeploy's rewriters: small, typed, filled by decorators.

A module rule matches a module by type or by structure (a renamed or re-implemented copy of a zoo
class) and builds a static replacement for it. An op rule matches a torch function that a module's
own forward calls, and gives a static implementation of that call, used while the module runs.
Each rule names the targets that need it; a plain ONNX export gets every rule. Rules marked
``dynamic_only`` apply only where the batch axis stays symbolic.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

TARGETS = ("ort", "openvino", "trt", "npu", "ncnn", "rknn")


@dataclass(frozen=True)
class Rule:
    name: str
    fixes: str  # what the published code does, and what the rule puts in its place
    matches: str  # what the rule looks for, in words
    targets: tuple[str, ...]
    dynamic_only: bool = False  # needed only where the batch axis stays symbolic

    def wanted(self, target: str, dynamic: bool) -> bool:
        return (target == "onnx" or target in self.targets) and (dynamic or not self.dynamic_only)


@dataclass(frozen=True, kw_only=True)
class ModuleRule(Rule):
    applies: Callable[[nn.Module], bool]
    build: Callable[[nn.Module, "LayerCall"], nn.Module]
    wraps: bool = False  # the replacement wraps the module, whose children keep their own rules


@dataclass(frozen=True, kw_only=True)
class OpRule(Rule):
    ops: tuple[str, ...]  # torch function names, as a TorchFunctionMode sees them, that the rule matches
    intercepts: tuple[str, ...]  # the names it handles once applied: ``ops`` and any paired calls
    static: Callable[..., tuple[torch.Tensor, bool]]  # static(func, args, kwargs, memo) -> (output, changed)


@dataclass
class LayerCall:
    """How the model called one module at the export shape: its inputs and the ops its forward used."""

    args: tuple
    kwargs: dict
    ops: set[str]

    @property
    def input(self) -> torch.Tensor:
        return self.args[0]


RULES: dict[str, Rule] = {}


def module_rule(name: str, fixes: str, matches: str, applies: Callable[[nn.Module], bool],
                targets: tuple[str, ...] = TARGETS, wraps: bool = False):
    """Register ``build(module, call) -> replacement`` (a function or a class) for modules ``applies`` accepts.

    A replacement stands for the whole module, so its children are not rewritten on their own, unless it
    ``wraps`` the module (with its children already rewritten).
    """

    def register(build):
        RULES[name] = ModuleRule(name=name, fixes=fixes, matches=matches, targets=targets, applies=applies, build=build,
                                 wraps=wraps)
        return build

    return register


def op_rule(name: str, fixes: str, ops: tuple[str, ...], also: tuple[str, ...] = (),
            targets: tuple[str, ...] = TARGETS, dynamic_only: bool = False):
    """Register ``static(func, args, kwargs, memo) -> (output, changed)`` for calls of the ``ops``.

    ``changed`` is False where the rule leaves a call as it was (a resize whose size is already
    constant); a rule that changes no call of a module is not applied to it. ``also`` names calls
    the rule handles without matching on them (the division after a sum).
    """

    def register(static):
        RULES[name] = OpRule(name=name, fixes=fixes, matches=f"calls of {', '.join(ops)}", targets=targets,
                             dynamic_only=dynamic_only, ops=ops, intercepts=ops + also, static=static)
        return static

    return register


def of_type(*types: type) -> Callable[[nn.Module], bool]:
    return lambda module: isinstance(module, types)


def structure_of(cls: type[nn.Module]) -> Callable[[nn.Module], bool]:
    from ..models.structure import fits

    return lambda module: fits(module, cls)
