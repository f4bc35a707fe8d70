"""Oriented boxes: ``output0`` carries xywh in pixels, the class scores, then the box's angle in radians; NMS
and matching use ultralytics' rotated-box IoU (``batch_probiou``, the IoU of the boxes' Gaussians, which is what
``yolo val`` scores OBB mAP with).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import OWN, Field, Instances, Labels
from .detect import Detect


@dataclass(frozen=True)
class OBB(Detect):
    task: ClassVar[str] = "obb"
    rotated: ClassVar[bool] = True
    box_name: ClassVar[str] = "boxes (xywh)"

    @property
    def overlap_name(self) -> str:
        return "rotated-box IoU (probiou)"

    @property
    def extra(self) -> int:
        return 1

    def extra_fields(self, start: int) -> tuple[Field, ...]:
        return (Field("angle", slice(start, start + 1), OWN),)

    def nms_box(self, rows):
        import torch

        return torch.cat([rows[:, :4], rows[:, 6:7]], 1)

    def box_overlap(self, a, b) -> np.ndarray:
        from ultralytics.utils.metrics import batch_probiou

        return batch_probiou(a, b).numpy()

    def labels(self, truth: Labels) -> Instances:
        """Rotated boxes from the labelled corners, as ultralytics' data loader makes them."""
        import torch
        from ultralytics.utils.ops import xyxyxyxy2xywhr

        found = super().labels(truth)
        corners = np.stack(truth.segments).astype(np.float32) if truth.segments else np.zeros((0, 4, 2), np.float32)
        found.boxes = xyxyxyxy2xywhr(torch.from_numpy(corners)).float().reshape(-1, 5)
        return found
