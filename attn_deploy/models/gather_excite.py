"""Gather-Excite.

Hu, Shen, Albanie, Sun, Vedaldi. "Gather-Excite: Exploiting Feature Context in Convolutional Neural
Networks." NeurIPS 2018. Follows timm's ``layers/gather_excite.py``: a parameter-free gather (mean
or strided average pooling) or a parameterised one (depthwise convolutions), then an MLP excite and
a sigmoid gate, resized back to the input with ``F.interpolate(size=x.shape[-2:])``.

timm's parameterised global gather needs the feature size at construction; a detector sees many
sizes, so YOLO forks pool adaptively to ``feat_size`` first. That adaptive pooling is kept here: it
does not divide YOLOv8's P5 map (20x20 at 640), which is what breaks the export.
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _depthwise_bn(channels: int, kernel: int, stride: int) -> list[nn.Module]:
    conv = nn.Conv2d(channels, channels, kernel, stride, padding=(kernel - 1) // 2, groups=channels, bias=False)
    return [conv, nn.BatchNorm2d(channels)]


def _gather_layers(channels: int, feat_size: int, extent: int) -> list[tuple[str, nn.Module]]:
    if extent == 0:
        pool = nn.AdaptiveAvgPool2d(feat_size)
        conv, norm = _depthwise_bn(channels, feat_size, 1)
        conv.padding = (0, 0)
        return [("pool", pool), ("conv1", conv), ("norm1", norm)]
    layers = []
    num_conv = int(math.log2(extent))
    for i in range(num_conv):
        conv, norm = _depthwise_bn(channels, 3, 2)
        layers += [(f"conv{i + 1}", conv), (f"norm{i + 1}", norm)]
        if i != num_conv - 1:
            layers.append((f"act{i + 1}", nn.ReLU(inplace=True)))
    return layers


class ConvMlp(nn.Module):
    """Two 1x1 convolutions with a ReLU between: the excite MLP."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden_features, in_features, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GatherExcite(nn.Module):
    """Gathers context over an extent (0: global), excites it through an MLP and gates the input."""

    def __init__(
        self,
        channels: int,
        feat_size: int = 7,
        extra_params: bool = False,
        extent: int = 0,
        use_mlp: bool = True,
        rd_ratio: float = 1.0 / 16,
    ):
        super().__init__()
        if extent and (extent % 2 or extent < 2):
            raise ValueError(f"GatherExcite extent must be 0 or an even number >= 2, got {extent}")
        self.extent = extent
        self.gather = nn.Sequential(OrderedDict(_gather_layers(channels, feat_size, extent))) if extra_params else None
        self.gk = self.extent * 2 - 1 if extent else 0
        self.gs = self.extent
        hidden = max(int(channels * rd_ratio), 1)
        self.mlp = ConvMlp(channels, hidden) if use_mlp else nn.Identity()
        self.gate = nn.Sigmoid()

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        gather = module.gather
        config = {"channels": module.mlp.fc1.in_channels, "extent": module.extent, "extra_params": gather is not None}
        if gather is not None and module.extent == 0:
            config["feat_size"] = gather.pool.output_size
        config["rd_ratio"] = module.mlp.fc1.out_channels / module.mlp.fc1.in_channels
        return config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.gather is not None:
            x_ge = self.gather(x)
        elif self.extent == 0:
            x_ge = x.mean(dim=(2, 3), keepdim=True)
        else:
            x_ge = F.avg_pool2d(x, kernel_size=self.gk, stride=self.gs, padding=self.gk // 2, count_include_pad=False)
        x_ge = self.mlp(x_ge)
        if x_ge.shape[-1] != 1 or x_ge.shape[-2] != 1:
            x_ge = F.interpolate(x_ge, size=size)
        return x * self.gate(x_ge)
