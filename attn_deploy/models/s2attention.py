"""S2Attention: the split-attention spatial-shift block of S2-MLPv2.

Yu, Li, Cai, Sun, Li. "S2-MLPv2: Improved Spatial-Shift MLP Architecture for Vision." arXiv 2108.01072,
2021. Published form: channel expansion by a Linear over an NHWC map, two groups of in-place
overlapping slice-assignment shifts, and split attention over the three branches.
"""

import torch
from torch import nn


def spatial_shift1(x: torch.Tensor) -> torch.Tensor:
    b, w, h, c = x.size()
    x[:, 1:, :, : c // 4] = x[:, : w - 1, :, : c // 4]
    x[:, : w - 1, :, c // 4 : c // 2] = x[:, 1:, :, c // 4 : c // 2]
    x[:, :, 1:, c // 2 : c * 3 // 4] = x[:, :, : h - 1, c // 2 : c * 3 // 4]
    x[:, :, : h - 1, 3 * c // 4 :] = x[:, :, 1:, 3 * c // 4 :]
    return x


def spatial_shift2(x: torch.Tensor) -> torch.Tensor:
    b, w, h, c = x.size()
    x[:, :, 1:, : c // 4] = x[:, :, : h - 1, : c // 4]
    x[:, :, : h - 1, c // 4 : c // 2] = x[:, :, 1:, c // 4 : c // 2]
    x[:, 1:, :, c // 2 : c * 3 // 4] = x[:, : w - 1, :, c // 2 : c * 3 // 4]
    x[:, : w - 1, :, 3 * c // 4 :] = x[:, 1:, :, 3 * c // 4 :]
    return x


class SplitAttention(nn.Module):
    """Softmax over k branches of a pooled descriptor, then a weighted sum of the branches."""

    def __init__(self, channel: int = 512, k: int = 3):
        super().__init__()
        self.channel = channel
        self.k = k
        self.mlp1 = nn.Linear(channel, channel, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = nn.Linear(channel, channel * k, bias=False)
        self.softmax = nn.Softmax(1)

    def forward(self, x_all: torch.Tensor) -> torch.Tensor:
        b, k, h, w, c = x_all.shape
        x_all = x_all.reshape(b, k, -1, c)
        a = torch.sum(torch.sum(x_all, 1), 1)
        hat_a = self.mlp2(self.gelu(self.mlp1(a)))
        hat_a = hat_a.reshape(b, self.k, c)
        bar_a = self.softmax(hat_a)
        attention = bar_a.unsqueeze(-2)
        out = attention * x_all
        return torch.sum(out, 1).reshape(b, h, w, c)


class S2Attention(nn.Module):
    """Expands channels threefold, shifts two thirds spatially, and fuses the thirds by split attention."""

    def __init__(self, channels: int = 512):
        super().__init__()
        self.mlp1 = nn.Linear(channels, channels * 3)
        self.mlp2 = nn.Linear(channels, channels)
        self.split_attention = SplitAttention(channels)

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        return {"channels": module.mlp2.in_features}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, w, h = x.size()
        x = x.permute(0, 2, 3, 1)
        x = self.mlp1(x)
        x1 = spatial_shift1(x[:, :, :, :c])
        x2 = spatial_shift2(x[:, :, :, c : c * 2])
        x3 = x[:, :, :, c * 2 :]
        x_all = torch.stack([x1, x2, x3], 1)
        a = self.split_attention(x_all)
        x = self.mlp2(a)
        return x.permute(0, 3, 1, 2)
