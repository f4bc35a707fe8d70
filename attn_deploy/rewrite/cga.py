"""Cascaded Group Attention and LocalWindowAttention (Liu et al., EfficientViT, CVPR 2023), static.

The attention-bias gather and the ``ab`` cache that ``train(False)`` stores as a plain attribute
(neither follows ``.half()`` nor ``.to()``) become one registered buffer; every Conv2d_BN is
fused; the rank-6 window partition and reverse become rank-4 slices and concats, with windows
stacked on the batch axis by a concat. Every size is a constant except the batch, left to -1, so
a dynamic-batch export needs no shape arithmetic. The per-head cascade stays a loop:
head i consumes head i-1's output.

ncnn has no batch axis (its blobs are w, h, d, c): pnnx refuses a concat or split along it, and ncnn
then cannot load the model. For ncnn each window is attended on its own (``cga-window-unbatched``):
the same weights run once per window, and windows never touch the batch axis.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..models.efficientvit import CascadedGroupAttention, LocalWindowAttention
from .linear import fused
from .registry import TARGETS, LayerCall, module_rule, structure_of


class StaticCascadedGroupAttention(nn.Module):
    def __init__(self, cga: nn.Module, size: tuple[int, int]):
        super().__init__()
        self.size, self.key_dim, self.d, self.scale = size, cga.key_dim, cga.d, cga.scale
        self.tokens = size[0] * size[1]
        self.qkvs = nn.ModuleList(fused(m.c, m.bn) for m in cga.qkvs)
        self.dws = nn.ModuleList(fused(m.c, m.bn) for m in cga.dws)
        self.act, self.proj = nn.ReLU(), fused(cga.proj[1].c, cga.proj[1].bn)
        self.register_buffer("bias", cga.attention_biases[:, cga.attention_bias_idxs].detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats_in, feats_out = x.chunk(len(self.qkvs), 1), []
        feat = feats_in[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + feats_in[i]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.d], 1)
            q = dw(q).reshape(-1, self.key_dim, self.tokens)
            k, v = k.reshape(-1, self.key_dim, self.tokens), v.reshape(-1, self.d, self.tokens)
            attn = ((q.transpose(1, 2) @ k) * self.scale + self.bias[i]).softmax(-1)
            feat = (v @ attn.transpose(1, 2)).reshape(-1, self.d, *self.size)
            feats_out.append(feat)
        return self.proj(self.act(torch.cat(feats_out, 1)))


class StaticLocalWindowAttention(nn.Module):
    def __init__(self, lwa: nn.Module, size: tuple[int, int], stacked: bool = True):
        super().__init__()
        ws = lwa.window_resolution
        self.stacked = stacked  # windows stacked on the batch axis (one attention call), else one call per window
        self.size, self.window, self.dim = size, ws, lwa.dim
        self.whole = size[0] <= ws and size[1] <= ws
        self.pad = (0, -size[1] % ws, 0, -size[0] % ws)
        self.grid = ((size[0] + self.pad[3]) // ws, (size[1] + self.pad[1]) // ws)
        self.attn = StaticCascadedGroupAttention(lwa.attn, size if self.whole else (ws, ws))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whole:
            return self.attn(x)
        if any(self.pad):
            x = F.pad(x, self.pad)
        (rows, cols), ws = self.grid, self.window
        windows = [x[:, :, i * ws : (i + 1) * ws, j * ws : (j + 1) * ws] for i in range(rows) for j in range(cols)]
        out = self._stacked(windows) if self.stacked else [self.attn(w) for w in windows]
        out = torch.cat([torch.cat(out[i * cols : (i + 1) * cols], 3) for i in range(rows)], 2)
        return out[:, :, : self.size[0], : self.size[1]] if any(self.pad) else out

    def _stacked(self, windows: list[torch.Tensor]) -> list[torch.Tensor]:
        count, ws = len(windows), self.window
        # Windows sit window-major on the batch axis; a reshape with the window count first and -1 for
        # the batch splits them again without reading the batch size.
        out = self.attn(torch.cat(windows, 0)).reshape(count, -1, self.dim, ws * ws).chunk(count, 0)
        return [part.reshape(-1, self.dim, ws, ws) for part in out]


def _size(call: LayerCall) -> tuple[int, int]:
    return int(call.input.shape[-2]), int(call.input.shape[-1])


_FIXES = "attention-bias gather and ab cache → constant buffer; Conv2d_BN fused"


# Not for rknn: rknn-toolkit2 2.3.2 builds the rank-6 partition as exported, and its constant folding fails on the
# window concats this rule writes (a Gather index out of range on the YOLOv8n-CGA fixture at 160).
@module_rule("cga-window", f"{_FIXES}; rank-6 window partition → rank-4 slices and concat",
             "LocalWindowAttention by type or structure", structure_of(LocalWindowAttention),
             targets=tuple(t for t in TARGETS if t not in ("ncnn", "rknn")))
def static_local_window(module: nn.Module, call: LayerCall) -> nn.Module:
    return StaticLocalWindowAttention(module, _size(call))


@module_rule("cga-window-unbatched", f"{_FIXES}; rank-6 window partition → rank-4 slices, each window attended "
             "on its own (none on the batch axis)", "LocalWindowAttention by type or structure",
             structure_of(LocalWindowAttention), targets=("ncnn",))
def unbatched_local_window(module: nn.Module, call: LayerCall) -> nn.Module:
    return StaticLocalWindowAttention(module, _size(call), stacked=False)


@module_rule("cga", _FIXES, "CascadedGroupAttention by type or structure", structure_of(CascadedGroupAttention))
def static_cga(module: nn.Module, call: LayerCall) -> nn.Module:
    return StaticCascadedGroupAttention(module, _size(call))
