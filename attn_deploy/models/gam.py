"""GAM: Global Attention Mechanism.

Liu, Shao, Hoffmann. "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial
Interactions." arXiv 2112.05561, 2021. Published form: a channel MLP applied by nn.Linear over an
NHWC-permuted, flattened map, then two 7x7 convolutions for the spatial gate.
"""

import torch
from torch import nn


class GAMAttention(nn.Module):
    """Channel gate from a per-pixel MLP, then a spatial gate from two 7x7 convolutions."""

    def __init__(self, in_channels: int, out_channels: int | None = None, rate: int = 4):
        super().__init__()
        out_channels = out_channels or in_channels
        self.channel_attention = nn.Sequential(
            nn.Linear(in_channels, int(in_channels / rate)),
            nn.ReLU(inplace=True),
            nn.Linear(int(in_channels / rate), in_channels),
        )
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(in_channels, int(in_channels / rate), kernel_size=7, padding=3),
            nn.BatchNorm2d(int(in_channels / rate)),
            nn.ReLU(inplace=True),
            nn.Conv2d(int(in_channels / rate), out_channels, kernel_size=7, padding=3),
            nn.BatchNorm2d(out_channels),
        )

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        first, last = module.channel_attention[0], module.spatial_attention[3]
        return {
            "in_channels": first.in_features,
            "out_channels": last.out_channels,
            "rate": first.in_features // first.out_features,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x_permute = x.permute(0, 2, 3, 1).view(b, -1, c)
        x_att_permute = self.channel_attention(x_permute).view(b, h, w, c)
        x_channel_att = x_att_permute.permute(0, 3, 1, 2).sigmoid()
        x = x * x_channel_att
        x_spatial_att = self.spatial_attention(x).sigmoid()
        return x * x_spatial_att
