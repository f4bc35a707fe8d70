"""Pose: ``output0`` carries each box's keypoints after the class scores, x and y in pixels (and a visibility
score where the keypoint shape has 3 values). Keypoints are compared by OKS, the keypoints' IoU, and scored as
``yolo val`` scores them (OKS with the data set's sigmas, the COCO ones for 17 keypoints, else uniform).
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import PIXELS, UNIT, Field, Instances, Labels
from .detect import Detect

AREA_FACTOR = 0.53  # yolo val's object area from its box, after COCO's keypoint evaluation


@dataclass(frozen=True)
class Pose(Detect):
    kpt_shape: tuple[int, int] = (17, 3)
    sigmas: tuple[float, ...] | None = None  # the data set's kpt_oks_sigmas, when it gives them
    task: ClassVar[str] = "pose"
    metrics: ClassVar[tuple[str, ...]] = ("pose", "box")

    @property
    def overlap_name(self) -> str:
        return "box IoU and keypoint OKS"

    @property
    def extra(self) -> int:
        return self.kpt_shape[0] * self.kpt_shape[1]

    def extra_fields(self, start: int) -> tuple[Field, ...]:
        stop, ndim = start + self.extra, self.kpt_shape[1]
        fields = (Field("keypoints", slice(start, stop, ndim), PIXELS),
                  Field("keypoints", slice(start + 1, stop, ndim), PIXELS))
        return fields + ((Field("keypoint visibility", slice(start + 2, stop, ndim), UNIT),) if ndim == 3 else ())

    @property
    def sigma(self) -> np.ndarray:
        from ultralytics.utils.metrics import OKS_SIGMA

        if self.sigmas:
            return np.array(self.sigmas, dtype=np.float32)
        return OKS_SIGMA if tuple(self.kpt_shape) == (17, 3) else np.ones(self.kpt_shape[0]) / self.kpt_shape[0]

    def instances(self, rows, outputs: list[np.ndarray], image: int, imgsz: tuple[int, int]) -> Instances:
        found = super().instances(rows, outputs, image, imgsz)
        found.keypoints = rows[:, 6:].reshape(-1, *self.kpt_shape)
        return found

    def keypoint_overlap(self, truth: Instances, pred: Instances) -> np.ndarray:
        from ultralytics.utils.metrics import kpt_iou
        from ultralytics.utils.ops import xyxy2xywh

        area = xyxy2xywh(truth.boxes)[:, 2:].prod(1) * AREA_FACTOR
        return kpt_iou(truth.keypoints, pred.keypoints, sigma=self.sigma, area=area).numpy()

    def similarity(self, a: Instances, b: Instances, slack: float = 0.0) -> np.ndarray:
        boxes = super().similarity(a, b)
        return np.minimum(boxes, self.keypoint_overlap(a, b)) if boxes.size else boxes

    def labels(self, truth: Labels) -> Instances:
        import torch

        found = super().labels(truth)
        found.keypoints = torch.from_numpy(truth.keypoints).float().reshape(-1, *self.kpt_shape)
        return found

    def overlaps(self, truth: Instances, pred: Instances) -> dict[str, np.ndarray]:
        return {"pose": self.keypoint_overlap(truth, pred), **super().overlaps(truth, pred)}
