"""nn.MultiheadAttention without its fused fast path (``aten::_native_multi_head_attention``).

Vaswani et al., NeurIPS 2017. Explicit input projections, rank-4 per-head matmuls and a softmax,
with the token count fixed at the export shape and the batch left to the reshape's -1.
"""

import torch
from torch import nn

from .registry import LayerCall, module_rule, of_type


class StaticMultiheadAttention(nn.Module):
    """What an eval-mode nn.MultiheadAttention computes without masks or extra key/value biases."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn or not mha._qkv_same_embed_dim:
            raise ValueError("only packed projections without bias_k/bias_v/add_zero_attn are rewritten")
        self.heads, self.batch_first = mha.num_heads, mha.batch_first
        self.scale = (mha.embed_dim // mha.num_heads) ** -0.5
        biases = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        self.q, self.k, self.v = (nn.Linear(mha.embed_dim, mha.embed_dim, b is not None) for b in biases)
        with torch.no_grad():
            for proj, w, b in zip((self.q, self.k, self.v), mha.in_proj_weight.chunk(3), biases):
                proj.weight.copy_(w)
                if b is not None:
                    proj.bias.copy_(b)
        self.out_proj = mha.out_proj

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[1], x.shape[2]
        return x.reshape(-1, int(n), self.heads, int(c) // self.heads).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise ValueError("attention masks are not rewritten")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._heads(self.q(query)), self._heads(self.k(key)), self._heads(self.v(value))
        attn = ((q * self.scale) @ k.transpose(2, 3)).softmax(-1)
        out = self.out_proj((attn @ v).transpose(1, 2).flatten(2))
        out = out if self.batch_first else out.transpose(0, 1)
        weights = (attn.mean(1) if average_attn_weights else attn) if need_weights else None
        return out, weights


@module_rule("mha", "nn.MultiheadAttention fused fast path → explicit projections, matmul and softmax",
             "nn.MultiheadAttention by type", of_type(nn.MultiheadAttention))
def static_mha(module: nn.Module, call: LayerCall) -> nn.Module:
    return StaticMultiheadAttention(module)
