"""Criss-Cross attention (Huang et al., CCNet, ICCV 2019) without -inf masks or batch folding.

The published code builds a -inf diagonal with ``torch.diag`` on every call (with ``.cuda()`` in
the original), repeats it over ``B*W`` and multiplies batch-folded views ``view(B*W, -1, H)`` with
bmm. Here the mask is a constant (1, H, 1, H) buffer that broadcasts over the batch and holds a
finite value, and every product is a 4-D matmul over static permutes.
"""

import torch
from torch import nn

from ..models.criss_cross import CrissCrossAttention
from .infinity import FINITE
from .registry import LayerCall, module_rule, structure_of

MASK = -FINITE  # added to the diagonal energies: softmax gives them 0 as -inf does, finite in fp16 (infinity.py)


@module_rule("criss-cross",
             "-inf diagonal from torch.diag, repeated over B*W → constant finite (1,H,1,H) mask buffer; "
             "bmm over batch-folded views (B*W, C, H) → 4-D matmul with static permutes",
             "CrissCrossAttention by type or structure", structure_of(CrissCrossAttention))
class StaticCrissCross(nn.Module):
    """Each position attends to its row and column: 4-D matmuls and a constant diagonal mask."""

    def __init__(self, cca: nn.Module, call: LayerCall):
        super().__init__()
        self.query_conv, self.key_conv, self.value_conv = cca.query_conv, cca.key_conv, cca.value_conv
        self.gamma = cca.gamma
        self.height = int(call.input.shape[-2])
        mask = torch.diag(torch.full((self.height,), MASK)).view(1, self.height, 1, self.height)
        self.register_buffer("mask", mask.to(cca.gamma.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        energy_h = (q.permute(0, 3, 2, 1) @ k.permute(0, 3, 1, 2)).permute(0, 2, 1, 3) + self.mask  # B,H,W,H'
        energy_w = q.permute(0, 2, 3, 1) @ k.permute(0, 2, 1, 3)  # B,H,W,W'
        attention = torch.cat([energy_h, energy_w], 3).softmax(3)
        att_h, att_w = attention[..., : self.height], attention[..., self.height :]
        out_h = (v.permute(0, 3, 1, 2) @ att_h.permute(0, 2, 3, 1)).permute(0, 2, 3, 1)  # B,W,C,H -> B,C,H,W
        out_w = (v.permute(0, 2, 1, 3) @ att_w.permute(0, 1, 3, 2)).permute(0, 2, 1, 3)  # B,H,C,W -> B,C,H,W
        return self.gamma * (out_h + out_w) + x
