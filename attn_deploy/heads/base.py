"""What every head spec has: its outputs and what each run of their channels holds, and the hooks that the
detection-level matcher and the mAP scorer call."""

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import AttnDeployError

# What bounds a field's values, which sets the scale of its tolerance (parity.py): box and keypoint
# coordinates in pixels are computed through values as large as the input size; scores, probabilities and
# normalised boxes stay within [0, 1]; coefficients, prototypes, angles and class indices are bounded by
# their own largest magnitude.
PIXELS, UNIT, OWN = "pixels", "unit", "own"
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # yolo val's mAP50-95 thresholds


@dataclass(frozen=True)
class Field:
    """A run of channels of one output (``channels`` indexes the output's channel axis) and what it holds."""

    name: str
    channels: slice
    bound: str  # PIXELS, UNIT or OWN


@dataclass(frozen=True)
class Output:
    name: str
    shape: tuple  # the expected shape, None where any size fits (batch, anchors)
    axis: int  # the channel axis
    fields: tuple[Field, ...]

    @property
    def holds(self) -> str:
        return ", ".join(dict.fromkeys(f.name for f in self.fields))

    def fits(self, array: np.ndarray) -> bool:
        return array.ndim == len(self.shape) and all(s is None or s == n for s, n in zip(self.shape, array.shape))

    def scale(self, ref: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
        """Per element, the magnitude its field's arithmetic reaches (broadcasts against ``ref``)."""
        scale = np.ones(ref.shape[self.axis])
        for f in self.fields:
            part = np.take(ref, np.arange(ref.shape[self.axis])[f.channels], axis=self.axis)
            own = float(np.abs(part[np.isfinite(part)]).max(initial=1.0))
            scale[f.channels] = {PIXELS: max(imgsz), UNIT: 1.0, OWN: own}[f.bound]
        return scale.reshape([-1 if i == self.axis % ref.ndim else 1 for i in range(ref.ndim)])


@dataclass
class Instances:
    """One image's detections (or a classifier's top classes), as torch tensors: what the matcher compares
    and the scorer scores. ``boxes``: xyxy pixels (xywhr for OBB); ``masks``: mask logits at the prototype
    resolution, cropped to their boxes; ``keypoints``: (n, k, 2 or 3) pixels and visibility."""

    boxes: object | None
    scores: object
    classes: object
    masks: object | None = None
    keypoints: object | None = None

    def __len__(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Labels:
    """One image's labels in the pixels of the letterboxed input of size ``imgsz`` (H, W): classes, xyxy boxes,
    and where the task has them, polygons (segments and OBB corners, each (k, 2)) and keypoints (n, k, 2 or 3)."""

    classes: np.ndarray
    boxes: np.ndarray
    imgsz: tuple[int, int]
    segments: list[np.ndarray] = field(default_factory=list)
    keypoints: np.ndarray | None = None


@dataclass(frozen=True)
class Head:
    """A task head: its outputs, its detection-level matcher and its mAP scorer. Subclasses fill in the task."""

    nc: int
    end2end: bool = False
    task: ClassVar[str] = "detect"
    metrics: ClassVar[tuple[str, ...]] = ("box",)  # what the scorer scores; the first is the task's own

    @property
    def outputs(self) -> tuple[Output, ...]:
        raise NotImplementedError

    @property
    def matcher(self) -> str:
        """The detection-level matcher, in words, for the parity table."""
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def check(self, outputs: list[np.ndarray], source: str) -> None:
        """Refuse outputs whose number or shapes this head does not produce: they cannot be compared."""
        expected = self.outputs
        if len(outputs) != len(expected) or not all(o.fits(a) for o, a in zip(expected, outputs)):
            raise AttnDeployError(
                f"{source} returns outputs of shapes {[tuple(a.shape) for a in outputs]}, but a {self.describe()} "
                f"outputs {[tuple('N' if s is None else s for s in o.shape) for o in expected]} "
                f"({'; '.join(f'{o.name}: {o.holds}' for o in expected)}); this output layout is unknown here")

    def describe(self) -> str:
        return f"{self.task} head{' (end-to-end)' if self.end2end else ''} with {self.nc} classes"

    def select(self, outputs: list[np.ndarray], imgsz: tuple[int, int], conf: float, iou: float, max_det: int,
               slack: float = 0.0, loose: bool = False) -> list[Instances]:
        """Per image, the instances a user gets at ``conf`` (NMS at ``iou``, or the head's own top-k). ``loose``
        widens the selection by ``slack``, the tolerance: what lies within it below the threshold, and twice
        ``max_det``; where that cannot be seen (a head that cuts its own top-k), the strict selection leaves out
        what lies within it above the cut instead."""
        raise NotImplementedError

    def similarity(self, a: Instances, b: Instances, slack: float = 0.0) -> np.ndarray:
        """(len(a), len(b)): how alike two instances are, 0 across classes, 1 for the same; mask pixels within
        ``slack`` of the threshold are not counted."""
        raise NotImplementedError

    def align(self, refs: list[np.ndarray], outs: list[np.ndarray], imgsz: tuple[int, int],
              match_iou: float) -> list[np.ndarray]:
        """``outs`` as the reference's rows, where the head's output is a set of instances in score order
        (end-to-end rows, RT-DETR's queries): each reference row meets the export's row of the same instance,
        wherever it stands (two instances of near-equal score swap places; a near-tie in a top-k selection lets
        another instance in). A row the export does not hold takes the reference's values: which instances are
        held is the detection-level check's to judge. Other outputs are left as they are."""
        return outs

    def predictions(self, outputs: list[np.ndarray], imgsz: tuple[int, int]) -> list[Instances]:
        """Per image, the predictions ``yolo val`` scores: conf 0.001, IoU 0.7, 300 per image, every class
        above the threshold (multi-label)."""
        raise NotImplementedError

    def labels(self, truth: Labels) -> Instances:
        """The labels as the scorer compares them."""
        import torch

        return Instances(torch.from_numpy(truth.boxes).float(), torch.ones(len(truth.classes)),
                         torch.from_numpy(truth.classes).float())

    def overlaps(self, truth: Instances, pred: Instances) -> dict[str, np.ndarray]:
        """Per metric, the (labels, predictions) overlap that ``yolo val`` thresholds at IoU 0.50:0.95."""
        raise NotImplementedError


def pairs(similar: np.ndarray, match_iou: float) -> list[tuple[int, int]]:
    """Rows of ``similar`` (instances in score order) matched greedily one to one with the most similar free column
    at >= ``match_iou``."""
    taken, found = set(), []
    for i in range(similar.shape[0]):
        for j in np.argsort(-similar[i], kind="stable").tolist():
            if similar[i, j] < match_iou:
                break
            if j not in taken:
                taken.add(j)
                found.append((i, j))
                break
    return found


def same_class(a: Instances, b: Instances) -> np.ndarray:
    return (a.classes.numpy()[:, None] == b.classes.numpy()[None]).astype(np.float64)
