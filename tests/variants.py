"""Independently written attention code, as forks write it: each rule must catch these too.

Some keep a zoo module's parameter names but not its class or its forward (the structural
rules); others use the export-unfriendly op in a module of their own (the op rules).
"""

import math

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


# --- Issue 14: attention as forks paste it in, each written here from the paper's description ----------------


class ExpandGate(nn.Module):
    """SE (Hu et al., 2018) with the gate broadcast by hand: ``expand_as`` before the multiply."""

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // reduction, bias=False), nn.ReLU(), nn.Linear(c // reduction, c))

    def forward(self, x):
        b, c = x.shape[:2]
        gate = self.fc(x.mean((2, 3))).sigmoid().view(b, c, 1, 1)
        return x * gate.expand_as(x)


class FoldedGroupAttention(nn.Module):
    """EMA-like (Ouyang et al., 2023): channel groups folded into the batch, GroupNorm with one group per
    channel there, cross-spatial weights from pooled softmaxes."""

    def __init__(self, c: int, groups: int = 8):
        super().__init__()
        self.groups, cg = groups, c // groups
        self.norm = nn.GroupNorm(cg, cg)
        self.mix = nn.Conv2d(cg, cg, 1)
        self.local = nn.Conv2d(cg, cg, 3, padding=1)

    def forward(self, x):
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, -1, h, w)
        along_h, along_w = g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)
        gh, gw = self.mix(torch.cat([along_h, along_w], 2)).split([h, w], 2)
        global_branch = self.norm(g * gh.sigmoid() * gw.transpose(2, 3).sigmoid())
        local_branch = self.local(g)
        weights = (global_branch.mean((2, 3)).softmax(-1)[..., None, None] * local_branch
                   + local_branch.mean((2, 3)).softmax(-1)[..., None, None] * global_branch).sum(1, keepdim=True)
        return (g * weights.sigmoid()).reshape(b, c, h, w)


class ShuffledGroupGate(nn.Module):
    """Shuffle attention (Zhang and Yang, 2021) written again: per group, half the channels gated by their mean,
    half by a one-channel-per-group GroupNorm; then a rank-5 channel shuffle."""

    def __init__(self, c: int, groups: int = 4):
        super().__init__()
        self.groups, half = groups, c // (2 * groups)
        self.norm = nn.GroupNorm(half, half)
        self.channel = nn.Parameter(torch.rand(2, 1, half, 1, 1) + 0.5)
        self.spatial = nn.Parameter(torch.rand(2, 1, half, 1, 1) + 0.5)

    def forward(self, x):
        b, c, h, w = x.shape
        a, s = x.reshape(b * self.groups, -1, h, w).chunk(2, 1)
        a = a * (self.channel[0] * a.mean((2, 3), keepdim=True) + self.channel[1]).sigmoid()
        s = s * (self.spatial[0] * self.norm(s) + self.spatial[1]).sigmoid()
        y = torch.cat([a, s], 1).reshape(b, 2, c // 2, h, w)
        return y.transpose(1, 2).reshape(b, c, h, w)


class SelectiveBranches(nn.Module):
    """SK convolution (Li et al., 2019): two dilated branches stacked on a new axis, softmax across it."""

    def __init__(self, c: int, reduction: int = 8):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=c // 16), nn.BatchNorm2d(c), nn.ReLU())
            for d in (1, 2))
        self.squeeze = nn.Sequential(nn.Conv2d(c, c // reduction, 1), nn.ReLU())
        self.select = nn.Conv2d(c // reduction, 2 * c, 1)

    def forward(self, x):
        b, c = x.shape[:2]
        stacked = torch.stack([branch(x) for branch in self.branches], dim=1)
        summary = self.squeeze(stacked.sum(1).mean((2, 3), keepdim=True))
        weights = self.select(summary).view(b, 2, c, 1, 1).softmax(dim=1)
        return (stacked * weights).sum(1)


class EinopsWindowAttention(nn.Module):
    """Non-overlapping window attention (Swin without the shift), windows cut and pasted by einops."""

    def __init__(self, c: int, heads: int = 4, window: int = 4):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        from einops import rearrange

        h, w = x.shape[2:]
        pattern = "b (heads d) (nh p1) (nw p2) -> (b nh nw) heads (p1 p2) d"
        q, k, v = (rearrange(t, pattern, heads=self.heads, p1=self.window, p2=self.window)
                   for t in self.qkv(x).chunk(3, 1))
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        y = rearrange(attn @ v, "(b nh nw) heads (p1 p2) d -> b (heads d) (nh p1) (nw p2)", nh=h // self.window,
                      nw=w // self.window, p1=self.window)
        return x + self.out(y)


class PatchTransformer(nn.Module):
    """MobileViT-like (Mehta and Rastegari, 2022): unfold into patches with einops, a LayerNorm transformer
    over the pixels at each patch position with a rank-5 head split, fold back, fuse."""

    def __init__(self, c: int, dim: int = 64, heads: int = 4, patch: int = 2):
        super().__init__()
        self.heads, self.patch = heads, patch
        self.into = nn.Conv2d(c, dim, 1)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.back = nn.Conv2d(dim, c, 1)

    def forward(self, x):
        from einops import rearrange

        h, w = x.shape[2:]
        t = rearrange(self.into(x), "b d (nh ph) (nw pw) -> b (ph pw) (nh nw) d", ph=self.patch, pw=self.patch)
        q, k, v = (rearrange(part, "b p n (heads d) -> b p heads n d", heads=self.heads)
                   for part in self.qkv(self.norm1(t)).chunk(3, -1))
        attn = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
        t = t + self.proj(rearrange(attn @ v, "b p heads n d -> b p n (heads d)"))
        t = t + self.ffn(self.norm2(t))
        y = rearrange(t, "b (ph pw) (nh nw) d -> b d (nh ph) (nw pw)", nh=h // self.patch, ph=self.patch)
        return x + self.back(y)


class TopkRegionAttention(nn.Module):
    """BiFormer-like (Zhu et al., 2023) bi-level routing: region descriptors pick the top-k regions each
    region attends to; their tokens are gathered at the computed indices."""

    def __init__(self, c: int, regions: int = 2, topk: int = 2):
        super().__init__()
        self.regions, self.topk = regions, topk
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def _tokens(self, t):
        b, c, h, w = t.shape
        r = self.regions
        return t.view(b, c, r, h // r, r, w // r).permute(0, 2, 4, 3, 5, 1).reshape(b, r * r, -1, c)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).chunk(3, 1)
        size = (h // self.regions, w // self.regions)
        affinity = F.avg_pool2d(q, size).flatten(2).transpose(1, 2) @ F.avg_pool2d(k, size).flatten(2)
        chosen = affinity.topk(self.topk, dim=-1).indices  # (b, regions, topk)
        qt, kt, vt = self._tokens(q), self._tokens(k), self._tokens(v)
        n = kt.shape[2]
        index = chosen.reshape(b, -1, 1, 1).expand(-1, -1, n, c)
        keys = torch.gather(kt, 1, index).reshape(b * qt.shape[1], self.topk * n, c)
        values = torch.gather(vt, 1, index).reshape(b * qt.shape[1], self.topk * n, c)
        attn = (qt.reshape(-1, n, c) @ keys.transpose(1, 2) * c**-0.5).softmax(-1)
        y = (attn @ values).view(b, self.regions, self.regions, h // self.regions, w // self.regions, c)
        return x + self.out(y.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w))


class OffsetSampling(nn.Module):
    """Deformable attention (Xia et al., DAT, 2022) reduced to its sampling: per group, offsets predicted from
    the queries move a reference grid built at the batch the module sees (batch x groups), and the keys are
    sampled there with grid_sample."""

    def __init__(self, c: int, groups: int = 4):
        super().__init__()
        self.groups, cg = groups, c // groups
        self.offsets = nn.Sequential(nn.Conv2d(cg, cg, 3, padding=1, groups=cg), nn.GELU(), nn.Conv2d(cg, 2, 1))
        self.value = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, -1, h, w)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        reference = torch.stack([xs, ys], -1)[None].repeat(b * self.groups, 1, 1, 1)
        grid = reference + self.offsets(g).permute(0, 2, 3, 1).tanh() * (2 / max(h, w))
        sampled = F.grid_sample(self.value(x).reshape(b * self.groups, -1, h, w), grid, align_corners=True)
        return x + sampled.reshape(b, c, h, w)


class LocalGlobalPooling(nn.Module):
    """MLCA-like (Wan et al., 2023): pooling to a 5x5 local map and from it to 1x1, a 1-D conv across channels,
    and adaptive pooling that upsamples: the global 1x1 weights to 5x5, the mixed 5x5 map to the input size."""

    def __init__(self, c: int, local: int = 5, mix: float = 0.5):
        super().__init__()
        self.local, self.mix = local, mix
        self.to_local = nn.AdaptiveAvgPool2d(local)
        self.conv_local = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.conv_global = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        b, c, h, w = x.shape
        local = self.to_local(x)
        pooled = F.adaptive_avg_pool2d(local, 1)
        weights_global = self.conv_global(pooled.view(b, 1, c)).view(b, c, 1, 1).sigmoid()
        weights_local = self.conv_local(local.permute(0, 2, 3, 1).reshape(b, 1, -1)).view(
            b, self.local, self.local, c).permute(0, 3, 1, 2).sigmoid()
        mixed = weights_local * (1 - self.mix) + F.adaptive_avg_pool2d(weights_global, self.local) * self.mix
        return x * F.adaptive_avg_pool2d(mixed, (h, w))


class UnbatchedLocalPooling(nn.Module):
    """MLCA as a public fork writes it, pooling 3-D tensors: the channel weights (B, C) turned into an unbatched
    (C, B, 1) map and pooled up to (C, k, k), the batch-mean map pooled down to (C, k, k), and their mix pooled up
    again to (C, H, W) before it gates the input."""

    def __init__(self, c: int, k: int = 2):
        super().__init__()
        self.k = k
        self.mix = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.mix(F.adaptive_avg_pool2d(x, 1))
        weights = F.adaptive_avg_pool2d(y.view(b, -1).transpose(-1, -2).unsqueeze(-1).sigmoid(), [self.k, self.k])
        local = F.adaptive_avg_pool2d(x.mean(0), [self.k, self.k]).sigmoid()
        return x * F.adaptive_avg_pool2d(weights * local, (h, w))


class DeformableLargeKernel(nn.Module):
    """Deformable large-kernel attention (Azad et al., D-LKA, 2024): a depthwise 5x5, then a dilated depthwise
    torchvision deformable convolution whose offsets a convolution predicts, then a 1x1, gating the input."""

    def __init__(self, c: int):
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.local = nn.Conv2d(c, c, 5, padding=2, groups=c)
        self.offsets = nn.Conv2d(c, 2 * 9, 3, padding=1)
        self.deform = DeformConv2d(c, c, 3, padding=2, dilation=2, groups=c)
        self.mix = nn.Conv2d(c, c, 1)

    def forward(self, x):
        a = self.local(x)
        return x * self.mix(self.deform(a, self.offsets(a)))


class CoordinateGate(nn.Module):
    """Coordinate attention (Hou et al., 2021): pooling along each axis with (None, 1) and (1, None) sizes."""

    def __init__(self, c: int, reduction: int = 32):
        super().__init__()
        mid = max(8, c // reduction)
        self.pool_h, self.pool_w = nn.AdaptiveAvgPool2d((None, 1)), nn.AdaptiveAvgPool2d((1, None))
        self.squeeze = nn.Sequential(nn.Conv2d(c, mid, 1), nn.BatchNorm2d(mid), nn.Hardswish())
        self.to_h, self.to_w = nn.Conv2d(mid, c, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        y = self.squeeze(torch.cat([self.pool_h(x), self.pool_w(x).permute(0, 1, 3, 2)], 2))
        along_h, along_w = torch.split(y, [h, w], 2)
        return x * self.to_h(along_h).sigmoid() * self.to_w(along_w.permute(0, 1, 3, 2)).sigmoid()


class ChannelSpatialGate(nn.Module):
    """CBAM (Woo et al., 2018): a shared MLP on max- and mean-pooled channels, then a 7x7 conv on the
    channel-wise mean and max maps."""

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(c, c // reduction, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(c // reduction, c, 1, bias=False))
        self.max_pool, self.avg_pool = nn.AdaptiveMaxPool2d(1), nn.AdaptiveAvgPool2d(1)
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        x = x * (self.mlp(self.max_pool(x)) + self.mlp(self.avg_pool(x))).sigmoid()
        maps = torch.cat([x.mean(1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        return x * self.spatial(maps).sigmoid()


class SeparableLargeKernel(nn.Module):
    """LSKA-like (Lau et al., 2024): a large depthwise kernel split into 1xk and kx1 parts, the second pair
    dilated, gating the input."""

    def __init__(self, c: int, k: int = 11):
        super().__init__()
        near, far, dilation = 3, k // 3, 3
        self.rows = nn.Conv2d(c, c, (1, near), padding=(0, near // 2), groups=c)
        self.cols = nn.Conv2d(c, c, (near, 1), padding=(near // 2, 0), groups=c)
        self.far_rows = nn.Conv2d(c, c, (1, far), padding=(0, far // 2 * dilation), dilation=dilation, groups=c)
        self.far_cols = nn.Conv2d(c, c, (far, 1), padding=(far // 2 * dilation, 0), dilation=dilation, groups=c)
        self.mix = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * self.mix(self.far_cols(self.far_rows(self.cols(self.rows(x)))))


class TokenEncoder(nn.Module):
    """A pre-norm transformer encoder block over the flattened map, heads split as ViT's reference code does
    (one rank-5 reshape and permute, unbound into q, k, v)."""

    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm1(t)).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        t = t + self.proj((attn @ v).transpose(1, 2).reshape(b, h * w, c))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)



class ExtremaGate(nn.Module):
    """A gate from channel and spatial extremes and sums, written with the reductions' several spellings:
    ``sum(dim=1)``, ``amax`` over a tuple of axes, ``torch.min(...).values`` and ``Tensor.max(dim)[0]``."""

    def __init__(self, c: int):
        super().__init__()
        self.spatial = nn.Conv2d(3, 1, 5, padding=2)
        self.channel = nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        c = x.shape[1]
        maps = torch.cat([x.sum(dim=1, keepdim=True) / c, torch.min(x, dim=1, keepdim=True).values,
                          x.max(1, keepdim=True)[0]], 1)
        pooled = torch.cat([x.amax((2, 3), keepdim=True), x.sum((-2, -1), keepdim=True) / x[0, 0].numel()], 1)
        return x * self.spatial(maps).sigmoid() * self.channel(pooled).sigmoid()

# The issue-14 catalogue: each variant's name and how to build it for c channels (windows and regions of 2, so
# that a P5 map as small as 2x4 still holds two), and those whose routing or sampling is data-dependent.
GRAPH_VARIANTS = {
    "se-expand-as": ExpandGate,
    "ema-folded-groupnorm": FoldedGroupAttention,
    "shuffle-attention": ShuffledGroupGate,
    "sk-stacked-branches": SelectiveBranches,
    "einops-windows": lambda c: EinopsWindowAttention(c, window=2),
    "mobilevit-patches": PatchTransformer,
    "mlca-upsampling-pool": LocalGlobalPooling,
    "coordatt-none-1-pool": CoordinateGate,
    "cbam-max-mean": ChannelSpatialGate,
    "lska-separable": SeparableLargeKernel,
    "layernorm-transformer": TokenEncoder,
    "biformer-topk-routing": TopkRegionAttention,
    "dat-offset-sampling": OffsetSampling,
    "dlka-deformable-conv": DeformableLargeKernel,
}
DATA_DEPENDENT = {"biformer-topk-routing", "dat-offset-sampling", "dlka-deformable-conv"}


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


class ConvHeadsAttention(nn.Module):
    """Multi-head self-attention over the map written by hand, as forks do: 1x1 convolutions for q, k and v,
    heads split by a reshape of the channels, the scale as a division, values applied as ``v @ attn^T``."""

    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = (t.reshape(b, self.heads, d, h * w) for t in (self.q(x), self.k(x), self.v(x)))
        attn = torch.softmax(torch.matmul(q.transpose(-2, -1), k) / math.sqrt(d), dim=-1)
        return x + self.proj(torch.matmul(v, attn.transpose(-2, -1)).reshape(b, c, h, w))


class TokenGroupCascade(nn.Module):
    """Cascaded group attention over tokens, written anew: the channels in groups, each group one head whose input
    adds the previous group's output, Linear projections, a learned relative-position bias per group gathered from
    a table, the scale applied to q."""

    def __init__(self, c: int, groups: int = 4, key: int = 8, side: int = 4):
        super().__init__()
        self.groups, self.key, self.d = groups, key, c // groups
        self.qkv = nn.ModuleList(nn.Linear(self.d, 2 * key + self.d) for _ in range(groups))
        self.table = nn.Parameter(torch.randn(groups, (2 * side - 1) ** 2) * 0.5)
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        points = torch.stack([ys.flatten(), xs.flatten()], 1)
        offset = points[:, None] - points[None] + side - 1
        self.register_buffer("index", offset[..., 0] * (2 * side - 1) + offset[..., 1])
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        parts, outs = x.flatten(2).transpose(1, 2).split(self.d, -1), []
        for i, part in enumerate(parts):
            q, k, v = self.qkv[i](part + outs[-1] if outs else part).split([self.key, self.key, self.d], -1)
            logits = (q * self.key**-0.5) @ k.transpose(1, 2) + self.table[i][self.index]
            outs.append(F.softmax(logits, dim=-1) @ v)
        return x + self.proj(torch.cat(outs, -1)).transpose(1, 2).reshape(b, c, h, w)
