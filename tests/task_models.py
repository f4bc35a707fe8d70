"""Seeded models of every ultralytics task from its own YAMLs, with trained-like statistics.

ultralytics initialises every head so that all anchors score about the same (class biases near -10, batch
norms at identity, so the signal of the image fades with depth): NMS then orders near-ties by rounding noise
and a classifier's argmax is arbitrary, so no detection-level comparison could mean anything, and a broken
layer barely shows. ``trained_like`` sets every batch norm's statistics from a forward pass over real and
seeded images (each layer's output normalised, as training leaves it, so the image reaches the head) and
draws the class-score biases from a seeded generator; the box branches keep ultralytics' biases, so boxes
stay boxes.
"""

import numpy as np
import torch
from torch import nn

from attn_deploy import heads
from attn_deploy.models.detector import calibrate_norms
from attn_deploy.parity import parity_inputs

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


def _calibrate(model: nn.Module, size: int = 128) -> None:
    """Batch-norm statistics from one training-mode pass over the bundled images and two seeded noise images,
    each variance floored as the zoo detectors' are (without it YOLOv9t's boxes moved 0.2 px between fp32 and
    fp64 on a noise image)."""
    images = parity_inputs((size, size), seeds=(0, 1))
    calibrate_norms(model, torch.from_numpy(np.concatenate(list(images.values()))), momentum=0.03)  # ultralytics'


@torch.no_grad()
def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    _calibrate(model)
    for layer in score_layers(model):  # logits of about unit spread around -1: scores across (0, 1)
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 4 - 3)
    return model.eval()


def build(yaml, task: str, seed: int = 0, end2end: bool = False, nc: int | None = None) -> nn.Module:
    """A seeded ``task`` model from an ultralytics YAML (a name or a dict; ``nc`` classes instead of its own),
    trained-like, in its end-to-end form when asked (YOLOv10/YOLO26: ultralytics selects it with ``nms=False``)."""
    from ultralytics.nn import tasks

    kind = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
            "obb": tasks.OBBModel, "classify": tasks.ClassificationModel, "rtdetr": tasks.RTDETRDetectionModel}[task]
    torch.manual_seed(seed)
    model = kind(yaml, nc=nc, verbose=False)
    if end2end:
        model.end2end = True
    return trained_like(model, seed)
