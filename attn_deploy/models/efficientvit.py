"""Cascaded Group Attention and LocalWindowAttention from EfficientViT.

Liu, Peng, Zheng, Yang, Hu, Yuan. "EfficientViT: Memory Efficient Vision Transformer with Cascaded
Group Attention." CVPR 2023. Published form (microsoft/Cream): Conv2d_BN pairs, an attention-bias
table gathered through an index buffer, the ``ab`` cache that ``train(False)`` stores as a plain
attribute, and a rank-6 window partition. As in the YOLO forks, LocalWindowAttention reads H and W
from its input instead of asserting a fixed classification resolution.
"""

import itertools

import torch
from torch import nn


class Conv2d_BN(nn.Sequential):  # noqa: N801 (published name)
    """A bias-free convolution followed by batch norm."""

    def __init__(self, a, b, ks=1, stride=1, pad=0, dilation=1, groups=1, bn_weight_init=1, resolution=-10000):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, dilation, groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)


def _bias_index(resolution: int) -> tuple[int, torch.Tensor]:
    points = list(itertools.product(range(resolution), range(resolution)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return len(offsets), torch.LongTensor(idxs).view(len(points), len(points))


class CascadedGroupAttention(nn.Module):
    """Each head attends over its own channel split, fed with the previous head's output."""

    def __init__(self, dim, key_dim, num_heads=8, attn_ratio=4, resolution=14, kernels=(5, 5, 5, 5)):
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.attn_ratio = attn_ratio
        self.qkvs = nn.ModuleList(
            Conv2d_BN(dim // num_heads, self.key_dim * 2 + self.d, resolution=resolution) for _ in range(num_heads)
        )
        self.dws = nn.ModuleList(
            Conv2d_BN(self.key_dim, self.key_dim, k, 1, k // 2, groups=self.key_dim, resolution=resolution)
            for k in kernels[:num_heads]
        )
        self.proj = nn.Sequential(
            nn.ReLU(), Conv2d_BN(self.d * num_heads, dim, bn_weight_init=0, resolution=resolution)
        )
        num_offsets, idxs = _bias_index(resolution)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, num_offsets))
        self.register_buffer("attention_bias_idxs", idxs)

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        return {
            "dim": module.qkvs[0].c.in_channels * module.num_heads,
            "key_dim": module.key_dim,
            "num_heads": module.num_heads,
            "attn_ratio": module.attn_ratio,
            "resolution": int(module.attention_bias_idxs.shape[0] ** 0.5),
            "kernels": [dw.c.kernel_size[0] for dw in module.dws],
        }

    @torch.no_grad()
    def train(self, mode: bool = True):
        super().train(mode)
        if mode and hasattr(self, "ab"):
            del self.ab
        else:
            self.ab = self.attention_biases[:, self.attention_bias_idxs]
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        trainingab = self.attention_biases[:, self.attention_bias_idxs]
        feats_in = x.chunk(len(self.qkvs), dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, qkv in enumerate(self.qkvs):
            if i > 0:
                feat = feat + feats_in[i]
            feat = qkv(feat)
            q, k, v = feat.view(B, -1, H, W).split([self.key_dim, self.key_dim, self.d], dim=1)
            q = self.dws[i](q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = (q.transpose(-2, -1) @ k) * self.scale + (trainingab[i] if self.training else self.ab[i])
            attn = attn.softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(B, self.d, H, W)
            feats_out.append(feat)
        return self.proj(torch.cat(feats_out, 1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention inside non-overlapping windows, padding the map to whole windows."""

    def __init__(self, dim, key_dim=16, num_heads=4, attn_ratio=4, resolution=14, window_resolution=7,
                 kernels=(5, 5, 5, 5)):
        super().__init__()
        # EfficientViT's blocks pass attn_ratio = dim / (key_dim * heads): each head's value is then as wide as
        # the channels it takes, which the cascade's sum needs. None asks for that, at any width.
        attn_ratio = dim // (key_dim * num_heads) if attn_ratio is None else attn_ratio
        self.dim = dim
        self.num_heads = num_heads
        self.resolution = resolution
        self.window_resolution = window_resolution
        window_resolution = min(window_resolution, resolution)
        self.attn = CascadedGroupAttention(
            dim, key_dim, num_heads, attn_ratio=attn_ratio, resolution=window_resolution, kernels=kernels
        )

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        attn = module.attn
        return {
            "dim": module.dim,
            "key_dim": attn.key_dim,
            "num_heads": module.num_heads,
            "attn_ratio": attn.attn_ratio,
            "resolution": module.resolution,
            "window_resolution": module.window_resolution,
            "kernels": [dw.c.kernel_size[0] for dw in attn.dws],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if H <= self.window_resolution and W <= self.window_resolution:
            return self.attn(x)
        x = x.permute(0, 2, 3, 1)
        pad_b = (self.window_resolution - H % self.window_resolution) % self.window_resolution
        pad_r = (self.window_resolution - W % self.window_resolution) % self.window_resolution
        padding = pad_b > 0 or pad_r > 0
        if padding:
            x = nn.functional.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH = pH // self.window_resolution
        nW = pW // self.window_resolution
        # window partition, BHWC -> B(nHh)(nWw)C -> BnHnWhwC -> (BnHnW)hwC -> (BnHnW)Chw
        x = (
            x.view(B, nH, self.window_resolution, nW, self.window_resolution, C)
            .transpose(2, 3)
            .reshape(B * nH * nW, self.window_resolution, self.window_resolution, C)
            .permute(0, 3, 1, 2)
        )
        x = self.attn(x)
        # window reverse, (BnHnW)Chw -> (BnHnW)hwC -> BnHnWhwC -> B(nHh)(nWw)C -> BHWC
        x = (
            x.permute(0, 2, 3, 1)
            .view(B, nH, nW, self.window_resolution, self.window_resolution, C)
            .transpose(2, 3)
            .reshape(B, pH, pW, C)
        )
        if padding:
            x = x[:, :H, :W].contiguous()
        return x.permute(0, 3, 1, 2)
