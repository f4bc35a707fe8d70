"""Accuracy parity: mAP50 and mAP50-95 on a validation split, for the original model and every export.

Predictions are made and scored as ``yolo val`` does, the head spec (``heads``) saying how: letterboxed input,
NMS at conf 0.001 and IoU 0.7 with every class above it (or the end-to-end head's own rows), 300 per image;
labels brought into the letterboxed input as ultralytics' data loader brings them; one-to-one matches at IoU
0.50:0.95 by the task's overlap (box IoU; mask IoU at the prototypes' resolution; keypoint OKS; rotated-box
IoU) and ultralytics' ``ap_per_class``. Segment and pose heads are scored on masks and keypoints and on
boxes. Every model is scored by this same code, so a difference in mAP is the model's, not the harness's.
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .data import Batches, Split
from .errors import AttnDeployError
from .heads import Head, Labels
from .heads.base import IOU_THRESHOLDS
from .parity import RunnerLike

# Allowed mAP50-95 drop against PyTorch, per precision. INT8: post-training quantization of a
# detector typically costs 0.5-2 points of mAP50-95; 0.02 is the bound we hold it to.
MAP_TOLERANCES = {"fp32": 0.001, "fp16": 0.005, "bf16": 0.005, "int8": 0.02}


@dataclass(frozen=True)
class Accuracy:
    map50: float  # of the task's own metric: masks for segment, keypoints for pose, boxes otherwise
    map: float  # mAP50-95
    images: int
    metric: str = "box"
    box: tuple[float, float] | None = None  # box mAP50 and mAP50-95, where the task's own metric is another


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
    def box_delta(self) -> float | None:
        """The box mAP50-95 difference, where the task's own metric is another (masks, keypoints)."""
        return None if self.accuracy.box is None else self.accuracy.box[1] - self.reference.box[1]

    @property
    def passed(self) -> bool:
        return self.delta >= -self.tolerance and (self.box_delta is None or self.box_delta >= -self.tolerance)


def _true_positives(overlap: np.ndarray | None, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(n_pred, 10): whether each prediction matches a label one to one at each IoU threshold, as
    ultralytics' ``match_predictions`` decides; ``overlap`` is (labels, predictions)."""
    correct = np.zeros((len(pred), len(IOU_THRESHOLDS)), dtype=bool)
    if overlap is None or not overlap.size:
        return correct
    overlap = overlap * (truth[:, None] == pred[None])
    for t, threshold in enumerate(IOU_THRESHOLDS):
        matches = np.argwhere(overlap >= threshold)
        matches = matches[overlap[matches[:, 0], matches[:, 1]].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
        matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
        correct[matches[:, 1], t] = True
    return correct


def letterboxed(split: Split, index: int, imgsz: tuple[int, int]) -> Labels:
    """Image ``index``'s labels moved into its letterboxed input, as ultralytics' ``LetterBox`` moves them."""
    (h0, w0), (h, w) = split.shapes[index], imgsz
    ratio = min(h / h0, w / w0)
    left = round((w - round(w0 * ratio)) / 2 - 0.1)
    top = round((h - round(h0 * ratio)) / 2 - 0.1)

    def move(points: np.ndarray) -> np.ndarray:
        return points * ratio + np.array([left, top] * (points.shape[-1] // 2))

    rows = split.labels[index]
    keypoints = None
    if split.keypoints:
        keypoints = split.keypoints[index].copy()
        keypoints[..., :2] = move(keypoints[..., :2])
    segments = [move(p) for p in split.segments[index]] if split.segments else []
    return Labels(rows[:, 0], move(rows[:, 1:]), (h, w), segments, keypoints)


def _batches(split: Split, batch: int, imgsz: tuple[int, int]):
    """(first image's index, images in the batch, the batch), read one batch at a time."""
    for index, x in enumerate(Batches(tuple(split.images), imgsz, batch)):
        start = index * batch
        yield start, min(batch, len(split.images) - start), x


def scored(head: Head, split: Split) -> Head:
    """``head`` as it scores ``split``: refused where the split lacks the task's labels; with the data set's
    keypoint sigmas for pose."""
    if not head.metrics:
        raise AttnDeployError(f"--data scores mAP, which a {head.describe()} does not have; its parity is checked "
                              f"by {head.matcher}")
    if split.task != head.task:
        raise AttnDeployError(f"{split.source}: read with {split.task} labels, but the model is a "
                              f"{head.describe()}")
    if head.task == "pose":
        if tuple(split.kpt_shape or ()) != tuple(head.kpt_shape):
            raise AttnDeployError(f"{split.source}: kpt_shape {split.kpt_shape} does not fit the model's "
                                  f"{list(head.kpt_shape)}")
        return dataclasses.replace(head, sigmas=split.kpt_sigmas)
    return head


def _ap(stats: list[tuple]) -> tuple[float, float]:
    from ultralytics.utils.metrics import ap_per_class

    tp, conf, pred_cls, target_cls = (np.concatenate(column) for column in zip(*stats))
    ap = ap_per_class(tp, conf, pred_cls, target_cls)[5]
    return (float(ap[:, 0].mean()), float(ap.mean())) if len(ap) else (0.0, 0.0)


def evaluate(runner: RunnerLike, split: Split, imgsz: tuple[int, int], batch: int = 1,
             head: Head | None = None) -> Accuracy:
    """mAP50 and mAP50-95 of ``runner`` on ``split``, at input size ``imgsz`` and ``batch`` images a run, scored
    as ``head`` (default: the runner's own model's) is scored."""
    from . import heads

    head = scored(head or heads.of_model(runner.model), split)
    stats: dict[str, list] = {metric: [] for metric in head.metrics}
    for start, count, x in _batches(split, batch, imgsz):
        for i, pred in enumerate(head.predictions(runner.run([x]), imgsz)[:count]):
            truth = head.labels(letterboxed(split, start + i, imgsz))
            overlaps = head.overlaps(truth, pred) if len(truth) and len(pred) else {}
            for metric in head.metrics:
                correct = _true_positives(overlaps.get(metric), truth.classes.numpy(), pred.classes.numpy())
                stats[metric].append((correct, pred.scores.numpy(), pred.classes.numpy(), truth.classes.numpy()))
    if not sum(len(s[3]) for s in stats[head.metrics[0]]):
        raise AttnDeployError(f"{split.source}: the split has no labelled objects to score")
    own, *box = [_ap(stats[metric]) for metric in head.metrics]
    return Accuracy(*own, len(split.images), head.metrics[0], box[0] if box else None)


@dataclass
class AccuracyCheck:
    """Scores candidates on ``split`` against the original model, scored once per input shape."""

    split: Split
    reference: RunnerLike
    head: Head
    tolerances: dict[str, float] = field(default_factory=lambda: dict(MAP_TOLERANCES))
    _scores: dict[tuple, Accuracy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scored(self.head, self.split)  # a split the head cannot be scored on fails before anything runs

    def score_reference(self, imgsz: tuple[int, int], batch: int) -> Accuracy:
        key = (tuple(imgsz), batch)
        if key not in self._scores:
            self._scores[key] = evaluate(self.reference, self.split, imgsz, batch, self.head)
        return self._scores[key]

    def compare(self, candidate: RunnerLike, imgsz: tuple[int, int], batch: int) -> AccuracyParity:
        reference = self.score_reference(imgsz, batch)
        accuracy = evaluate(candidate, self.split, imgsz, batch, self.head)
        return AccuracyParity(accuracy, reference, self.tolerances[candidate.precision])
