"""Independently written attention code, as forks write it: each rule must catch these too.

Some keep a zoo module's parameter names but not its class or its forward (the structural
rules); others use the export-unfriendly op in a module of their own (the op rules).
"""

import torch
import torch.nn.functional as F
from torch import nn

from attn_deploy.models.efficientvit import CascadedGroupAttention


class CyclicShift(nn.Module):
    """Swin-style: roll the map by half a window, mix channels, roll back."""

    def __init__(self, channels: int, shift: int = 3):
        super().__init__()
        self.shift = shift
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(2, 3))
        return self.mix(x).roll((self.shift, self.shift), (2, 3))


class ShiftMixer(nn.Module):
    """S2-MLPv2 rewritten by hand: the same parameters, shifts written as a loop of in-place assignments."""

    def __init__(self, channels: int, step: int = 1):
        super().__init__()
        self.step = step
        self.mlp1 = nn.Linear(channels, channels * 3)
        self.mlp2 = nn.Linear(channels, channels)
        self.split_attention = _Split(channels)

    def _shift(self, x, order):
        c, s = x.shape[-1], self.step
        for g, (axis, forward) in enumerate(order):
            part = slice(g * c // 4, (g + 1) * c // 4)
            if axis == 1 and forward:
                x[:, s:, :, part] = x[:, :-s, :, part]
            elif axis == 1:
                x[:, :-s, :, part] = x[:, s:, :, part]
            elif forward:
                x[:, :, s:, part] = x[:, :, :-s, part]
            else:
                x[:, :, :-s, part] = x[:, :, s:, part]
        return x

    def forward(self, x):
        c = x.shape[1]
        t = self.mlp1(x.permute(0, 2, 3, 1))
        a = self._shift(t[..., :c], [(1, True), (1, False), (2, True), (2, False)])
        b = self._shift(t[..., c : 2 * c], [(2, True), (2, False), (1, True), (1, False)])
        y = self.split_attention(a, b, t[..., 2 * c :])
        return self.mlp2(y).permute(0, 3, 1, 2)


class _Split(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.mlp1 = nn.Linear(channels, channels, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = nn.Linear(channels, channels * 3, bias=False)

    def forward(self, a, b, c):
        pooled = (a + b + c).sum(dim=(1, 2))
        weights = self.mlp2(self.gelu(self.mlp1(pooled))).view(-1, 3, a.shape[-1]).softmax(1)
        return a * weights[:, None, None, 0] + b * weights[:, None, None, 1] + c * weights[:, None, None, 2]


class PyramidGate(nn.Module):
    """Adaptive max and average pooling to sizes that do not divide the map, gating the input."""

    def forward(self, x):
        coarse = F.adaptive_max_pool2d(x, 6) + F.adaptive_avg_pool2d(x, (5, 3)).mean((2, 3), keepdim=True)
        return x * coarse.amax((2, 3), keepdim=True).sigmoid()


class CrissCrossEye(nn.Module):
    """Criss-Cross attention with the published parameter names, an eye-based -inf mask and einsum."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, 1)
        self.gamma = nn.Parameter(torch.ones(1) * 0.7)

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        mask = torch.eye(h, dtype=torch.bool)
        e_h = torch.einsum("bchw,bcgw->bhwg", q, k).masked_fill(mask[:, None, :], float("-inf"))
        e_w = torch.einsum("bchw,bchv->bhwv", q, k)
        att = torch.cat([e_h, e_w], -1).softmax(-1)
        out = torch.einsum("bcgw,bhwg->bchw", v, att[..., :h]) + torch.einsum("bchv,bhwv->bchw", v, att[..., h:])
        return self.gamma * out + x


class GamLinear(nn.Module):
    """GAM with the published parameter names and F.linear applied on the NHWC map directly."""

    def __init__(self, c: int, rate: int = 4):
        super().__init__()
        self.channel_attention = nn.Sequential(nn.Linear(c, c // rate), nn.ReLU(), nn.Linear(c // rate, c))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(c, c // rate, 7, padding=3), nn.BatchNorm2d(c // rate), nn.ReLU(),
            nn.Conv2d(c // rate, c, 7, padding=3), nn.BatchNorm2d(c))

    def forward(self, x):
        gate = self.channel_attention(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).sigmoid()
        x = x * gate
        return x * self.spatial_attention(x).sigmoid()


class UpsampleGate(nn.Module):
    """Gate from a strided pooling, resized back with a size read from the input's shape."""

    def __init__(self, mode: str = "bilinear"):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        context = F.avg_pool2d(x, 3, 2, 1)
        kwargs = {"align_corners": False} if self.mode == "bilinear" else {}
        return x * F.interpolate(context, size=x.shape[2:], mode=self.mode, **kwargs).sigmoid()


class WindowAttentionCopy(nn.Module):
    """LocalWindowAttention copied into a fork under another name, its partition rewritten with unfold-style views."""

    def __init__(self, dim, key_dim=16, num_heads=4, attn_ratio=4, resolution=14, window_resolution=7,
                 kernels=(5, 5, 5, 5)):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.resolution, self.window_resolution = resolution, window_resolution
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, attn_ratio, min(window_resolution, resolution),
                                           kernels)

    def forward(self, x):
        b, c, h, w = x.shape
        ws = self.window_resolution
        ph, pw = -h % ws, -w % ws
        x = F.pad(x, (0, pw, 0, ph))
        nh, nw = (h + ph) // ws, (w + pw) // ws
        win = x.view(b, c, nh, ws, nw, ws).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, ws, ws)
        out = self.attn(win).view(b, nh, nw, c, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * ws, nw * ws)
        return out[:, :, :h, :w]


class TokenBlock(nn.Module):
    """A ViT block over the flattened map, nn.MultiheadAttention in sequence-first layout with weights returned."""

    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)
        self.attn = nn.MultiheadAttention(c, heads)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.proj(x).flatten(2).permute(2, 0, 1)
        y, weights = self.attn(t, t, t)
        return x + y.permute(1, 2, 0).reshape(b, c, h, w) * weights.mean()


class EinsumAttention(nn.Module):
    """Global attention over positions written with einsum."""

    def __init__(self, c: int):
        super().__init__()
        self.qkv = nn.Conv2d(c, 3 * c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, 1)
        attn = torch.einsum("bcn,bcm->bnm", q, k).mul(c**-0.5).softmax(-1)
        return x + torch.einsum("bcm,bnm->bcn", v, attn).view(b, c, h, w)


class EnergyGate(nn.Module):
    """SimAM written again: the variance as a sum over the map divided by its size."""

    def forward(self, x):
        h, w = x.shape[2:]
        d = (x - x.mean((2, 3), keepdim=True)) ** 2
        var = torch.sum(d, dim=(2, 3), keepdim=True) / (h * w)
        return x * torch.sigmoid(d / (4 * (var + 1e-4)) + 0.5)


class BandAttention(nn.Module):
    """Self-attention over the flattened map, each position seeing its neighbours in raster order: the band mask
    is rebuilt on every call and written with ``masked_fill(-inf)``."""

    def __init__(self, c: int, band: int = 6):
        super().__init__()
        self.band = band
        self.qkv = nn.Conv2d(c, 3 * c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, 1)
        scores = (q.transpose(1, 2) @ k) * c**-0.5
        index = torch.arange(h * w, device=x.device)
        outside = (index[:, None] - index[None]).abs() > self.band
        attn = scores.masked_fill(outside, float("-inf")).softmax(-1)
        return x + (v @ attn.transpose(1, 2)).view(b, c, h, w)


class LowestFloatMask(nn.Module):
    """Channel attention that drops weak channels with ``torch.where(keep, s, finfo.min)`` before its softmax:
    finite in fp32, -inf once the graph runs in fp16."""

    def __init__(self, c: int):
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        s = self.fc(x.mean((2, 3), keepdim=True))
        keep = s > s.mean(1, keepdim=True)
        weights = torch.where(keep, s, torch.finfo(s.dtype).min).softmax(1)
        return x * (1 + weights)


class CausalBias(nn.Module):
    """Attention along rows with a learned relative bias and a causal mask held in a buffer of -inf."""

    def __init__(self, c: int, width: int):
        super().__init__()
        self.qk = nn.Conv2d(c, 2 * c, 1)
        self.bias = nn.Parameter(torch.randn(width, width) * 0.1)
        self.register_buffer("causal", torch.full((width, width), float("-inf")).triu(1))

    def forward(self, x):
        q, k = self.qk(x).chunk(2, 1)
        attn = (q.permute(0, 2, 3, 1) @ k.permute(0, 2, 1, 3) + self.bias + self.causal).softmax(-1)  # B,H,W,W
        return x + (attn @ x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
