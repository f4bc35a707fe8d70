"""Seeded models of every ultralytics task from its own YAMLs, with trained-like statistics.

ultralytics initialises every head so that all anchors score about the same (class biases near -10, batch
norms at identity): NMS then orders near-ties by rounding noise and a classifier's argmax is arbitrary, so
no detection-level comparison could mean anything. ``trained_like`` draws batch-norm statistics and the
class-score biases from a seeded generator, as training leaves them different per channel; the box branches
keep ultralytics' biases, so boxes stay boxes.
"""

import torch
from torch import nn

from attn_deploy import heads

# A small RT-DETR of our own: YOLOv8n's backbone, an AIFI encoder at P5 and a two-layer decoder with 64 hidden
# channels (rtdetr-l has 33M parameters and takes minutes per export here).
TINY_RTDETR = {
    "nc": 4,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C2f", [32, True]],
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "C2f", [64, True]],  # 4: P3
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "C2f", [64, True]],  # 6: P4
        [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "C2f", [64, True]],  # 8: P5
    ],
    "head": [
        [-1, 1, "AIFI", [128, 4]],  # 9: attention over P5 (an nn.MultiheadAttention inside)
        [[4, 6, 9], 1, "RTDETRDecoder", ["nc", 64, 50, 4, 4, 2]],  # hidden 64, 50 queries, 4 points, 4 heads, 2 layers
    ],
}


def score_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose biases set the class scores."""
    from ultralytics.nn.modules import Classify, RTDETRDecoder

    head = heads.head_module(model)
    if isinstance(head, Classify):
        return [head.linear]
    if isinstance(head, RTDETRDecoder):
        return [head.enc_score_head, *head.dec_score_head]
    branches = [head.cv3, *([head.one2one_cv3] if getattr(head, "one2one_cv3", None) is not None else [])]
    return [seq[-1] for branch in branches for seq in branch]


@torch.no_grad()
def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)

    def draw(shape, low: float, high: float) -> torch.Tensor:
        return torch.rand(shape, generator=generator) * (high - low) + low

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(draw(n, 0.5, 1.5))
            m.bias.copy_(draw(n, -0.5, 0.5))
            m.running_mean.copy_(draw(n, -0.5, 0.5))
            m.running_var.copy_(draw(n, 0.5, 1.5))
    for layer in score_layers(model):
        layer.bias.copy_(draw(layer.bias.shape, -3.0, 1.0))
    return model.eval()


def build(yaml, task: str, seed: int = 0, end2end: bool = False) -> nn.Module:
    """A seeded ``task`` model from an ultralytics YAML (a name or a dict), trained-like, in its end-to-end form
    when asked (YOLOv10/YOLO26: ultralytics selects it with ``nms=False``)."""
    from ultralytics.nn import tasks

    kind = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
            "obb": tasks.OBBModel, "classify": tasks.ClassificationModel, "rtdetr": tasks.RTDETRDetectionModel}[task]
    torch.manual_seed(seed)
    model = kind(yaml, verbose=False)
    if end2end:
        model.end2end = True
    return trained_like(model, seed)
