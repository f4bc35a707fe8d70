"""±inf constants made finite and fp16-safe.

Attention code masks with infinities (``masked_fill(mask, float("-inf"))``, ``torch.where(mask, x, -inf)``,
``torch.full(size, -inf)``), or with values beyond fp16's range that become them in fp16 (``-1e9``,
``torch.finfo(torch.float32).min``); RT-DETR's decoder marks the anchors it cannot use with +inf. In an
exported graph such a constant turns into NaN in fp16 arithmetic (inf - inf, 0 * inf) and in a softmax over a
fully masked row, and NPU compilers refuse it. ``FINITE`` does what infinity does in these uses and stays
finite: a softmax gives exp(-30000 - max) exactly 0 in fp32 and fp16, a sigmoid gives exactly 1 at +30000,
and x ± 30000 stays within fp16's 65504 for |x| below 35504. Like every rule, each replacement is verified
against the original module, so a use where the finite value computes something else is left alone.

Two rules: ``finite-inf`` for the calls that make such a constant while the module runs, and
``finite-inf-state`` for a module that holds one (RT-DETR's decoder caches its anchors at the export shape,
so the trace reads the cached tensor and never calls ``masked_fill``).
"""

import math

import torch
from torch import nn

from .ops import StaticOps
from .registry import RULES, LayerCall, module_rule, op_rule

FINITE = 30000.0
FP16_MAX = 65504.0
CREATES = ("masked_fill", "masked_fill_", "where", "full", "full_like", "new_full", "fill_", "tensor")


def _finite(value):
    """``value`` with a scalar beyond fp16's range replaced by ±FINITE; and whether it was."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > FP16_MAX:
        return math.copysign(FINITE, value), True
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() == 1:
        if abs(float(value)) > FP16_MAX:
            return torch.full_like(value, math.copysign(FINITE, float(value))), True
    return value, False


@op_rule("finite-inf", "±inf (or beyond fp16's range) written by masked_fill / where / full / fill_ / tensor → "
         "±30000: the same softmax, sigmoid and mask results, finite in fp16", ops=CREATES)
def finite_fill(func, args: tuple, kwargs: dict, memo: dict):
    args, changed = zip(*(_finite(a) for a in args)) if args else ((), ())
    found = {k: _finite(v) for k, v in kwargs.items()}
    kwargs = {k: v for k, (v, _) in found.items()}
    return func(*args, **kwargs), any(changed) or any(c for _, c in found.values())


def _held(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's own floating tensors (buffers and cached attributes, not parameters) beyond fp16's range."""
    own = {**module._buffers, **{k: v for k, v in vars(module).items() if isinstance(v, torch.Tensor)}}
    return {k: v for k, v in own.items() if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)
            and v.is_floating_point() and bool((v.abs() > FP16_MAX).any())}


@module_rule("finite-inf-state", "buffers and cached tensors holding ±inf (RT-DETR's invalid anchors) → ±30000, "
             "and the finite-inf calls", "a module holding a tensor beyond fp16's range",
             lambda module: bool(_held(module)), wraps=True)
class FiniteState(nn.Module):
    """``module`` holding ±FINITE where its buffers and cached tensors held values beyond fp16's range, and
    running with the ``finite-inf`` calls, so that what it computes anew is finite too."""

    def __init__(self, module: nn.Module, call: LayerCall):
        super().__init__()
        for name, value in _held(module).items():
            setattr(module, name, torch.where(value.abs() > FP16_MAX, value.sign() * FINITE, value))
        self.module = module

    def forward(self, *args, **kwargs):
        with StaticOps([RULES["finite-inf"]]):
            return self.module(*args, **kwargs)
