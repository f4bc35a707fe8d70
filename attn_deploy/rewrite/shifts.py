"""Shifts: torch.roll, and S2-MLPv2's in-place overlapping slice-assignment shifts.

``torch.roll`` becomes slices and a concat with constant offsets. S2-MLPv2's ``spatial_shift``
writes ``x[:, 1:] = x[:, :-1]`` in place: source and destination overlap, so eager PyTorch's
result depends on the order its copy kernel walks memory (and on the thread count), while the
paper, and ONNX's ScatterND, shift the original values. ``TrueShifts`` runs such code with the
paper's semantics; it is the reference wherever the two disagree.
"""

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..models.s2attention import S2Attention
from .capture import overlapping_assignment
from .linear import conv1x1
from .registry import LayerCall, module_rule, op_rule, structure_of


class TrueShifts(TorchFunctionMode):
    """Slice assignments read their whole source before writing, as the paper and ONNX define them."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if overlapping_assignment(func, args):
            args = (args[0], args[1], args[2].clone())
        return func(*args, **(kwargs or {}))


def _roll_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, tuple | None]:
    x = args[0]
    shifts = args[1] if len(args) > 1 else kwargs["shifts"]
    dims = args[2] if len(args) > 2 else kwargs.get("dims")
    as_tuple = (lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,))
    return x, as_tuple(shifts), None if dims is None else as_tuple(dims)


def _roll(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    n = int(x.shape[dim])
    shift = int(shift) % n
    if not shift:
        return x
    return torch.cat([x.narrow(dim, n - shift, shift), x.narrow(dim, 0, n - shift)], dim)


@op_rule("roll", "torch.roll → slices and a concat with constant offsets (circular semantics kept)", ops=("roll",))
def static_roll(func, args: tuple, kwargs: dict, memo: dict):
    x, shifts, dims = _roll_args(args, kwargs)
    if dims is None:
        return _roll(x.flatten(), shifts[0], 0).view(x.shape), True
    for shift, dim in zip(shifts, dims):
        x = _roll(x, shift, dim)
    return x, True


def shift(x: torch.Tensor, dim: int, size: int, step: int) -> torch.Tensor:
    """``out[i] = x[i - step]`` along ``dim`` (step ±1); the edge that has no source keeps its value."""
    if step > 0:
        return torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, size - 1)], dim)
    return torch.cat([x.narrow(dim, 1, size - 1), x.narrow(dim, size - 1, 1)], dim)


# Per quarter of the channels: (NCHW axis, step) of spatial_shift1 and spatial_shift2.
SHIFT1 = ((2, 1), (2, -1), (3, 1), (3, -1))
SHIFT2 = ((3, 1), (3, -1), (2, 1), (2, -1))


@module_rule("s2-shift",
             "in-place overlapping shifts → true shifts by slices and concat; Linear over NHWC → 1x1 convolution; "
             "rank-5 branch stack → three rank-4 branches",
             "S2Attention by type or structure", structure_of(S2Attention))
class StaticS2Attention(nn.Module):
    """S2Attention on NCHW: 1x1 convolutions for its Linear layers, true shifts, rank-4 split attention."""

    def __init__(self, s2: nn.Module, call: LayerCall):
        super().__init__()
        self.channels = s2.mlp2.in_features
        self.size = tuple(int(s) for s in call.input.shape[-2:])
        attention = s2.split_attention
        self.expand, self.project = conv1x1(s2.mlp1), conv1x1(s2.mlp2)
        self.fc1, self.fc2 = conv1x1(attention.mlp1), conv1x1(attention.mlp2)
        self.gelu = nn.GELU(approximate=attention.gelu.approximate)

    def _shift(self, x: torch.Tensor, moves: tuple) -> torch.Tensor:
        c = self.channels
        quarters = x.split([c // 4, c // 2 - c // 4, 3 * c // 4 - c // 2, c - 3 * c // 4], 1)
        return torch.cat([shift(q, dim, self.size[dim - 2], step) for q, (dim, step) in zip(quarters, moves)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        x1, x2, x3 = self.expand(x).split(c, 1)
        branches = (self._shift(x1, SHIFT1), self._shift(x2, SHIFT2), x3)
        pooled = (branches[0] + branches[1] + branches[2]).sum((2, 3), keepdim=True)
        weights = self.fc2(self.gelu(self.fc1(pooled))).reshape(-1, 3, c, 1).softmax(1)
        w1, w2, w3 = (w.reshape(-1, c, 1, 1) for w in weights.split(1, 1))
        return self.project(branches[0] * w1 + branches[1] * w2 + branches[2] * w3)
