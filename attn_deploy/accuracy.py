"""Accuracy parity: mAP50 and mAP50-95 on a validation split, for the original model and every export.

Predictions are made and scored as ``yolo val`` does: letterboxed input, NMS at conf 0.001 and IoU 0.7,
boxes scaled back to the original image, one-to-one matches with the labels at IoU 0.50:0.95, and
ultralytics' ``ap_per_class``. Every model is scored by this same code, so a difference in mAP is
the model's, not the harness's.
"""

from dataclasses import dataclass, field

import numpy as np

from .data import Batches, Split
from .errors import AttnDeployError
from .parity import RunnerLike

# Allowed mAP50-95 drop against PyTorch, per precision. INT8: post-training quantization of a
# detector typically costs 0.5-2 points of mAP50-95; 0.02 is the bound we hold it to.
MAP_TOLERANCES = {"fp32": 0.001, "fp16": 0.005, "bf16": 0.005, "int8": 0.02}
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


@dataclass(frozen=True)
class Accuracy:
    map50: float
    map: float  # mAP50-95
    images: int


@dataclass
class AccuracyParity:
    """One model's mAP next to the original model's, and whether the mAP50-95 drop is within tolerance."""

    accuracy: Accuracy
    reference: Accuracy
    tolerance: float

    @property
    def delta(self) -> float:
        return self.accuracy.map - self.reference.map

    @property
    def delta50(self) -> float:
        return self.accuracy.map50 - self.reference.map50

    @property
    def passed(self) -> bool:
        return self.delta >= -self.tolerance


def _true_positives(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_pred, 10): whether each prediction matches a label one to one at each IoU threshold."""
    import torch
    from ultralytics.utils.metrics import box_iou

    correct = np.zeros((len(pred), len(IOU_THRESHOLDS)), dtype=bool)
    if not len(pred) or not len(labels):
        return correct
    iou = box_iou(torch.from_numpy(labels[:, 1:]), torch.from_numpy(pred[:, :4])).numpy()
    iou *= labels[:, :1] == pred[:, 5][None]
    for t, threshold in enumerate(IOU_THRESHOLDS):
        matches = np.argwhere(iou >= threshold)
        matches = matches[iou[matches[:, 0], matches[:, 1]].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
        matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
        correct[matches[:, 1], t] = True
    return correct


def _batches(split: Split, batch: int, imgsz: tuple[int, int]):
    """(first image's index, images in the batch, the batch), read one batch at a time."""
    for index, x in enumerate(Batches(tuple(split.images), imgsz, batch)):
        start = index * batch
        yield start, min(batch, len(split.images) - start), x


def _predictions(output: np.ndarray, shapes: list[tuple[int, int]], imgsz: tuple[int, int]) -> list[np.ndarray]:
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    found = non_max_suppression(torch.from_numpy(output.astype(np.float32)), 0.001, 0.7, max_det=300,
                                max_time_img=1e9)
    preds = []
    for det, shape in zip(found, shapes):
        det = det.numpy().astype(np.float64)
        det[:, :4] = scale_boxes(imgsz, det[:, :4], shape)
        preds.append(det)
    return preds


def evaluate(runner: RunnerLike, split: Split, imgsz: tuple[int, int], batch: int = 1) -> Accuracy:
    """mAP50 and mAP50-95 of ``runner`` on ``split``, at input size ``imgsz`` and ``batch`` images a run."""
    from ultralytics.utils.metrics import ap_per_class

    stats = []
    for start, count, x in _batches(split, batch, imgsz):
        shapes = split.shapes[start:start + count]
        for pred, labels in zip(_predictions(runner.run([x])[0][:count], shapes, imgsz),
                                split.labels[start:start + count]):
            stats.append((_true_positives(pred, labels), pred[:, 4], pred[:, 5], labels[:, 0]))
    tp, conf, pred_cls, target_cls = (np.concatenate(column) for column in zip(*stats))
    if not len(target_cls):
        raise AttnDeployError(f"{split.source}: the split has no labelled objects to score")
    ap = ap_per_class(tp, conf, pred_cls, target_cls)[5]
    return Accuracy(float(ap[:, 0].mean()) if len(ap) else 0.0, float(ap.mean()) if len(ap) else 0.0,
                    len(split.images))


@dataclass
class AccuracyCheck:
    """Scores candidates on ``split`` against the original model, scored once per input shape."""

    split: Split
    reference: RunnerLike
    tolerances: dict[str, float] = field(default_factory=lambda: dict(MAP_TOLERANCES))
    _scores: dict[tuple, Accuracy] = field(default_factory=dict)

    def score_reference(self, imgsz: tuple[int, int], batch: int) -> Accuracy:
        key = (tuple(imgsz), batch)
        if key not in self._scores:
            self._scores[key] = evaluate(self.reference, self.split, imgsz, batch)
        return self._scores[key]

    def compare(self, candidate: RunnerLike, imgsz: tuple[int, int], batch: int) -> AccuracyParity:
        reference = self.score_reference(imgsz, batch)
        accuracy = evaluate(candidate, self.split, imgsz, batch)
        return AccuracyParity(accuracy, reference, self.tolerances[candidate.precision])
