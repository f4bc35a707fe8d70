"""Linear layers over an NHWC-permuted map become 1x1 convolutions on NCHW: no Transpose left.

GAM (Liu et al., arXiv 2112.05561) applies its channel MLP by permuting to NHWC, flattening and
calling nn.Linear; the same per-pixel product is a 1x1 convolution on the NCHW map.
"""

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models.gam import GAMAttention
from .registry import LayerCall, module_rule, structure_of


@torch.no_grad()
def conv1x1(linear: nn.Linear) -> nn.Conv2d:
    """The 1x1 convolution that applies ``linear`` at every pixel of an NCHW map."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    conv.weight.copy_(linear.weight[:, :, None, None])
    if linear.bias is not None:
        conv.bias.copy_(linear.bias)
    return conv


def fused(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution computing ``norm(conv(x))`` of the eval-mode pair, folded in float64 and stored in the
    pair's dtype: one rounding per weight, not one per step of the fold."""
    dtype = conv.weight.dtype
    return fuse_conv_bn_eval(copy.deepcopy(conv).eval().double(), copy.deepcopy(norm).eval().double()).to(dtype)


class StaticGAM(nn.Module):
    """GAM with its channel MLP as 1x1 convolutions and its spatial convolutions fused with their norms."""

    def __init__(self, gam: nn.Module):
        super().__init__()
        first, last = gam.channel_attention[0], gam.channel_attention[2]
        conv1, norm1, _, conv2, norm2 = gam.spatial_attention
        self.channel = nn.Sequential(conv1x1(first), nn.ReLU(), conv1x1(last))
        self.spatial = nn.Sequential(fused(conv1, norm1), nn.ReLU(), fused(conv2, norm2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x).sigmoid()
        return x * self.spatial(x).sigmoid()


@module_rule("linear-conv", "channel MLP as nn.Linear over an NHWC-permuted map → 1x1 convolutions, no Transpose",
             "GAMAttention by type or structure", structure_of(GAMAttention))
def static_gam(module: nn.Module, call: LayerCall) -> nn.Module:
    return StaticGAM(module)
