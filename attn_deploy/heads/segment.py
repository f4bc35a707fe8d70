"""Segmentation: ``output0`` carries 32 mask coefficients per box after the class scores, ``output1`` the mask
prototypes at a quarter of the input size. A box's mask is its coefficients times the prototypes, cropped to the
box and thresholded at 0, as ultralytics assembles it (``ops.process_mask``); masks are compared and scored at
the prototypes' resolution, as ``yolo val`` scores them.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import OWN, Field, Instances, Labels, Output
from .detect import Detect

MASK_RATIO = 4  # the prototypes' downsampling, and that of the label masks yolo val compares them with


def mask_logits(protos: np.ndarray, coefficients, boxes, imgsz: tuple[int, int]):
    """(n, mh, mw) mask logits cropped to their boxes: what ``ops.process_mask`` thresholds at 0."""
    import torch
    from ultralytics.utils.ops import crop_mask

    protos = torch.from_numpy(protos.astype(np.float32))
    c, mh, mw = protos.shape
    if not len(coefficients):
        return torch.zeros((0, mh, mw))
    logits = (coefficients @ protos.view(c, -1)).view(-1, mh, mw)
    return crop_mask(logits, boxes * torch.tensor([mw / imgsz[1], mh / imgsz[0]] * 2))


def mask_similarity(a, b, slack: float) -> np.ndarray:
    """Pairwise mask IoU of two sets of mask logits, over the pixels both decide: a pixel within ``slack`` of the
    threshold on either side is not counted (its side of 0 is within tolerance). Two empty masks are alike."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    decided_a, decided_b = (a.abs() > slack).double(), (b.abs() > slack).double()
    inside_a, inside_b = (a > 0).double() * decided_a, (b > 0).double() * decided_b
    intersection = inside_a @ inside_b.T
    union = inside_a @ decided_b.T + decided_a @ inside_b.T - intersection
    return np.where(union.numpy() > 0, intersection.numpy() / np.maximum(union.numpy(), 1), 1.0)


@dataclass(frozen=True)
class Segment(Detect):
    nm: int = 32
    task: ClassVar[str] = "segment"
    metrics: ClassVar[tuple[str, ...]] = ("mask", "box")

    @property
    def overlap_name(self) -> str:
        return "box IoU and mask IoU (masks from coefficients x prototypes)"

    @property
    def extra(self) -> int:
        return self.nm

    def extra_fields(self, start: int) -> tuple[Field, ...]:
        return (Field("mask coefficients", slice(start, start + self.nm), OWN),)

    def more_outputs(self) -> tuple[Output, ...]:
        return (Output("output1", (None, self.nm, None, None), 1, (Field("prototypes", slice(0, self.nm), OWN),)),)

    def instances(self, rows, outputs: list[np.ndarray], image: int, imgsz: tuple[int, int]) -> Instances:
        found = super().instances(rows, outputs, image, imgsz)
        found.masks = mask_logits(outputs[1][image], rows[:, 6:], rows[:, :4], imgsz)
        return found

    def similarity(self, a: Instances, b: Instances, slack: float = 0.0) -> np.ndarray:
        boxes = super().similarity(a, b)
        return np.minimum(boxes, mask_similarity(a.masks, b.masks, slack)) if boxes.size else boxes

    def labels(self, truth: Labels) -> Instances:
        """Label masks drawn as ultralytics' data loader draws them (overlapping, smaller over larger), in its order."""
        import torch
        from ultralytics.data.utils import polygons2masks_overlap

        found = super().labels(truth)
        if not len(truth.classes):
            found.masks = torch.zeros((0, truth.imgsz[0] // MASK_RATIO, truth.imgsz[1] // MASK_RATIO))
            return found
        drawn, order = polygons2masks_overlap(truth.imgsz, truth.segments, MASK_RATIO)
        index = torch.arange(1, len(order) + 1).view(-1, 1, 1)
        found = Instances(found.boxes[order], found.scores[order], found.classes[order])
        found.masks = (torch.from_numpy(drawn.astype(np.int64))[None] == index).float()
        return found

    def overlaps(self, truth: Instances, pred: Instances) -> dict[str, np.ndarray]:
        from ultralytics.utils.metrics import mask_iou

        masks = mask_iou(truth.masks.flatten(1), (pred.masks > 0).flatten(1).float()).numpy()
        return {"mask": masks, **super().overlaps(truth, pred)}
