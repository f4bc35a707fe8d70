"""Plain multi-head self-attention over the flattened feature map: the baseline for CGA.

Vaswani et al. "Attention Is All You Need." NeurIPS 2017; used on feature maps as in Dosovitskiy et
al., "An Image is Worth 16x16 Words", ICLR 2021. Published form: nn.MultiheadAttention, whose
eval-mode fast path dispatches to ``aten::_native_multi_head_attention``.
"""

import torch
from torch import nn


class MHSA(nn.Module):
    """Global self-attention of every position with every other, through nn.MultiheadAttention."""

    def __init__(self, c1: int, num_heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(c1, num_heads, batch_first=True)

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        return {"c1": module.attn.embed_dim, "num_heads": module.attn.num_heads}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y, _ = self.attn(t, t, t, need_weights=False)
        return y.transpose(1, 2).reshape(b, c, h, w)
