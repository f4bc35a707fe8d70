"""Verification of a replacement against the original module, at the export shape, in fp64.

Inputs: the module's own input when the model ran on a real image, a seeded Gaussian draw with
that input's mean and standard deviation, and, for a dynamic export, a seeded draw with one more
batch element. Both modules run in float64, so the difference measures the rewrite, not fp32
rounding. A replacement passes when ``max|new - ref| <= TOLERANCE * max(1, max|ref|)``.
"""

import contextlib
import copy

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from .registry import LayerCall
from .shifts import TrueShifts

TOLERANCE = 1e-6


def _seeded(args: tuple, kwargs: dict, generator: torch.Generator, extra_batch: int) -> tuple[tuple, dict]:
    drawn: dict[int, torch.Tensor] = {}  # the same tensor passed twice (self-attention's q, k, v) stays one

    def draw(t):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return t
        if id(t) not in drawn:
            shape = (t.shape[0] + extra_batch, *t.shape[1:])
            drawn[id(t)] = torch.randn(shape, generator=generator, dtype=t.dtype) * t.std() + t.mean()
        return drawn[id(t)]

    return tree_map(draw, (args, kwargs))


def verification_inputs(call: LayerCall, dynamic: bool) -> list[tuple[tuple, dict]]:
    generator = torch.Generator().manual_seed(0)
    inputs = [(call.args, call.kwargs), _seeded(call.args, call.kwargs, generator, 0)]
    return inputs + [_seeded(call.args, call.kwargs, generator, 1)] if dynamic else inputs


@torch.no_grad()
def run64(module: nn.Module, args: tuple, kwargs: dict, true_shift: bool = False) -> list[torch.Tensor]:
    """``module``'s tensor outputs in float64, optionally with true-shift semantics."""
    module = copy.deepcopy(module).double()
    args, kwargs = tree_map(lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
                            (args, kwargs))
    with TrueShifts() if true_shift else contextlib.nullcontext():
        out = module(*args, **kwargs)
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Largest absolute difference of two output lists, and the largest magnitude in ``a``."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError(f"outputs differ in shape: {[tuple(x.shape) for x in a]} vs {[tuple(y.shape) for y in b]}")
    diff = max(float((x - y).abs().max()) for x, y in zip(a, b))
    return diff, max(float(x.abs().max()) for x in a)


def within(diff: float, scale: float) -> bool:
    return diff <= TOLERANCE * max(1.0, scale)


def verify(original: nn.Module, replacement: nn.Module, call: LayerCall, dynamic: bool, true_shift: bool) -> float:
    """Largest difference between ``replacement`` and ``original`` over the verification inputs.

    Raises ValueError when it exceeds the tolerance or the outputs do not match in shape.
    """
    worst = 0.0
    for args, kwargs in verification_inputs(call, dynamic):
        diff, scale = difference(run64(original, args, kwargs, true_shift), run64(replacement, args, kwargs))
        if not within(diff, scale):
            raise ValueError(f"max abs error {diff:.3g} exceeds {TOLERANCE:g} x max(1, {scale:.3g})")
        worst = max(worst, diff)
    return worst
