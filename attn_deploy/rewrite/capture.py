"""One run of the model at the export shape, recording how each module was called.

For every module: its first call's inputs, and the torch functions its own forward called (calls
made by a child's forward count for the child). A slice assignment whose source overlaps its
destination in memory is recorded as ``OVERLAPPING_ASSIGNMENT``: eager PyTorch's result for it
depends on copy order.
"""

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from .registry import LayerCall

OVERLAPPING_ASSIGNMENT = "overlapping __setitem__"


def _span(t: torch.Tensor) -> tuple[int, int]:
    start = t.storage_offset()
    return start, start + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()) if size > 0)


def overlapping_assignment(func, args: tuple) -> bool:
    """Whether ``func(*args)`` is ``x[index] = value`` with ``value`` overlapping ``x[index]`` in memory."""
    if getattr(func, "__name__", "") != "__setitem__" or len(args) != 3 or not isinstance(args[2], torch.Tensor):
        return False
    target, index, value = args
    if target.untyped_storage().data_ptr() != value.untyped_storage().data_ptr():
        return False
    (a0, a1), (b0, b1) = _span(target[index]), _span(value)
    return a0 <= b1 and b0 <= a1 and (a0, a1) != (b0, b1)


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.ops: dict[str, set[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.stack:
            name = OVERLAPPING_ASSIGNMENT if overlapping_assignment(func, args) else getattr(func, "__name__", "")
            self.ops[self.stack[-1]].add(name)
        return func(*args, **(kwargs or {}))


def _detached(tree):
    return tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, tree)


def capture(model: nn.Module, example: torch.Tensor) -> dict[str, LayerCall]:
    """Run ``model(example)`` once; every module's path mapped to how it was first called."""
    recorder, calls, hooks = _Recorder(), {}, []

    def enter(path: str):
        def hook(module, args, kwargs):
            recorder.stack.append(path)
            ops = recorder.ops.setdefault(path, set())
            calls.setdefault(path, LayerCall(_detached(args), _detached(kwargs), ops))

        return hook

    def leave(module, args, output) -> None:
        recorder.stack.pop()

    for path, module in model.named_modules():
        if path:
            hooks.append(module.register_forward_pre_hook(enter(path), with_kwargs=True))
            hooks.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad(), recorder:
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return calls
