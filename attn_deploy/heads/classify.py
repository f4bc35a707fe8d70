"""Classification: ``output0`` is (B, classes) probabilities (softmax). Its detection-level check is top-k
agreement: the reference's top 5 classes must be the export's, a class within the tolerance of the 5th
score on the other side counting as in."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import UNIT, Field, Head, Instances, Output, same_class

TOP_K = 5


@dataclass(frozen=True)
class Classify(Head):
    task: ClassVar[str] = "classify"
    metrics: ClassVar[tuple[str, ...]] = ()

    @property
    def matcher(self) -> str:
        return f"top-{min(TOP_K, self.nc)} classes agree"

    @property
    def outputs(self) -> tuple[Output, ...]:
        return (Output("output0", (None, self.nc), 1, (Field("class probabilities", slice(0, self.nc), UNIT),)),)

    def select(self, outputs: list[np.ndarray], imgsz: tuple[int, int], conf: float, iou: float, max_det: int,
               slack: float = 0.0, loose: bool = False) -> list[Instances]:
        import torch

        found = []
        for probs in torch.from_numpy(outputs[0].astype(np.float32)):
            top = probs.topk(min(TOP_K, self.nc))
            classes = (probs >= top.values[-1] - slack).nonzero()[:, 0] if loose else top.indices
            found.append(Instances(None, probs[classes], classes.float()))
        return found

    def similarity(self, a: Instances, b: Instances, slack: float = 0.0) -> np.ndarray:
        return same_class(a, b)
