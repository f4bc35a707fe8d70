"""Detection: YOLO's Detect head in its two forms, and RT-DETR's decoder.

- NMS form (every YOLO, and YOLOv10/YOLO26 unless their one-to-one head is selected): ``output0`` is
  (B, 4 + nc + extra, anchors), xywh boxes in pixels, then class scores; NMS picks the boxes.
- End-to-end form (YOLOv10 and YOLO26's one-to-one head, selected as ultralytics does with ``nms=False``,
  or left alone by fusion): ``output0`` is (B, k, 6 + extra), rows of xyxy pixels, score, class index, the
  head's top-k boxes with no NMS; a score threshold is all that selects them.
- RT-DETR's decoder: (B, queries, 6), rows of normalised cxcywh, score, class index, no NMS.

Segment, pose and OBB heads (their own files) are Detect heads with extra channels after the scores.
"""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import OWN, PIXELS, UNIT, Field, Head, Instances, Output, pairs, same_class

VAL_CONF, VAL_IOU, VAL_MAX_DET = 0.001, 0.7, 300  # yolo val's NMS
LOOSE_ROWS = 2  # the loose NMS reads the best-scoring 2 x its row limit (a seeded 640 model has 8400 x classes)


@dataclass(frozen=True)
class Detect(Head):
    rotated: ClassVar[bool] = False  # OBB: xywh + angle, rotated NMS
    box_name: ClassVar[str] = "boxes"

    @property
    def nms_free(self) -> bool:
        """Whether the head selects its own top-k rows (end-to-end, RT-DETR), so that no NMS follows."""
        return self.end2end

    @property
    def matcher(self) -> str:
        how = "top-k rows above the threshold, no NMS" if self.nms_free else "NMS"
        return f"{self.overlap_name} after {how}, same class"

    @property
    def overlap_name(self) -> str:
        return "box IoU"

    @property
    def extra(self) -> int:
        """Channels after the class scores (NMS form) or the class index (end-to-end form)."""
        return 0

    def extra_fields(self, start: int) -> tuple[Field, ...]:
        return ()

    def more_outputs(self) -> tuple[Output, ...]:
        return ()

    @property
    def outputs(self) -> tuple[Output, ...]:
        box = Field(self.box_name, slice(0, 4), PIXELS)
        if self.end2end:
            fields = (box, Field("score", slice(4, 5), UNIT), Field("class index", slice(5, 6), OWN),
                      *self.extra_fields(6))
            return Output("output0", (None, None, 6 + self.extra), 2, fields), *self.more_outputs()
        fields = (box, Field("class scores", slice(4, 4 + self.nc), UNIT), *self.extra_fields(4 + self.nc))
        return Output("output0", (None, 4 + self.nc + self.extra, None), 1, fields), *self.more_outputs()

    def rows(self, output: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool = False,
             slack: float = 0.0) -> list:
        """Per image, (n, 6 + extra) rows: box, score, class, extra; by NMS, or by score alone when end-to-end.
        ``slack`` adds to NMS's rows what a near-tie may have decided (``loose_nms``), an anchor's classes within it
        of its best included."""
        import torch
        from ultralytics.utils.nms import non_max_suppression

        def nms(x: np.ndarray, iou_at: float, most: int, multi: bool) -> list:
            # No time limit: a truncated NMS would differ between two runs of the same output.
            return non_max_suppression(torch.from_numpy(x.astype(np.float32)), conf, iou_at, nc=self.nc,
                                       multi_label=multi, max_det=most, max_time_img=1e9, rotated=self.rotated,
                                       end2end=self.nms_free)

        kept = nms(output, iou, max_det, multi_label)
        if not slack or self.nms_free:
            return kept
        return [torch.cat([k, self.loose_nms(*self.candidates(image, conf, slack), iou, slack, max_det)])
                for k, image in zip(kept, output)]

    def candidates(self, output: np.ndarray, conf: float, slack: float) -> tuple:
        """One image's rows as NMS reads them (box, score, class, extra), none suppressed: each anchor's best class
        above ``conf``, and its other classes within ``slack`` of the best (rounding may pick them instead); and
        which rows hold their anchor's best class."""
        import torch
        from ultralytics.utils.ops import xywh2xyxy

        x = torch.from_numpy(output.T.astype(np.float32))
        box, scores, extra = x[:, :4], x[:, 4:4 + self.nc], x[:, 4 + self.nc:]
        box = box if self.rotated else xywh2xyxy(box)
        top = scores.max(1, keepdim=True).values
        best = scores == top
        chosen = (scores > conf) & (best | (scores >= top - slack))
        anchor, label = torch.where(chosen)
        rows = torch.cat([box[anchor], scores[anchor, label, None], label[:, None].float(), extra[anchor]], 1)
        return rows, best[anchor, label].numpy()

    def loose_nms(self, rows, best: np.ndarray, iou: float, slack: float, most: int):
        """The rows that NMS keeps under some perturbation of the scores and overlaps within ``slack``: a row is
        dropped only when a row kept under every such perturbation overlaps it by more than ``iou + slack`` and
        outscores it by more than ``slack``. A row is kept for sure when it holds its anchor's ``best`` class and no
        row of its class that is kept, or that scores within ``slack`` of it, overlaps it by more than
        ``iou - slack``. Which of two near-equal boxes survives NMS, and so which boxes the survivor suppresses, is
        the rounding's choice, not the export's. Classes apart, as NMS keeps them, over the ``LOOSE_ROWS`` x
        ``most`` best-scoring rows (``rows`` adds what NMS keeps beyond them), in score order."""
        scores, classes = rows[:, 4].numpy(), rows[:, 5].numpy()
        order = np.argsort(-scores, kind="stable")[:LOOSE_ROWS * most]
        kept = []
        for c in np.unique(classes[order]):
            members = order[classes[order] == c]
            kept += members[self._loose_class(rows[members], best[members], iou, slack)].tolist()
        return rows[sorted(kept, key=lambda k: -scores[k])]

    def _loose_class(self, rows, best: np.ndarray, iou: float, slack: float) -> list[int]:
        """``loose_nms`` over the rows of one class, in score order: the indices kept."""
        scores, boxes = rows[:, 4].numpy(), self.nms_box(rows)
        kept, sure = [], []
        for j in range(len(rows)):
            near = j + 1 + int(np.searchsorted(-scores[j + 1:], -(scores[j] - slack), side="right"))
            rivals = np.r_[np.array(kept, dtype=int), np.arange(j + 1, near)]
            against = self.box_overlap(boxes[rivals], boxes[j:j + 1])[:, 0] if len(rivals) else np.zeros(0)
            higher = scores[rivals] - scores[j]
            certain = np.r_[np.array(sure, dtype=bool), np.zeros(near - j - 1, dtype=bool)]
            if (certain & (against > iou + slack) & (higher > slack)).any():
                continue
            sure.append(bool(best[j]) and not ((against > iou - slack) & (higher > -slack)).any())
            kept.append(j)
        return kept

    def nms_box(self, rows):
        """The box NMS and the matcher compare, from rows."""
        return rows[:, :4]

    def instances(self, rows, outputs: list[np.ndarray], image: int, imgsz: tuple[int, int]) -> Instances:
        return Instances(self.nms_box(rows), rows[:, 4], rows[:, 5])

    def select(self, outputs: list[np.ndarray], imgsz: tuple[int, int], conf: float, iou: float, max_det: int,
               slack: float = 0.0, loose: bool = False) -> list[Instances]:
        if loose:
            rows = self.rows(outputs[0], max(conf - slack, 0.0), iou, 2 * max_det, slack=slack)
        elif not self.nms_free:
            rows = self.rows(outputs[0], conf, iou, max_det)
        else:  # the head's own top-k: a row within slack of its lowest kept score may be cut on the other side
            cuts = [max(conf, float(scores.min()) + slack) for scores in outputs[0][..., 4]]
            rows = [self.rows(outputs[0][b:b + 1], cut, iou, max_det)[0] for b, cut in enumerate(cuts)]
        return [self.instances(r, outputs, b, imgsz) for b, r in enumerate(rows)]

    def align(self, refs: list[np.ndarray], outs: list[np.ndarray], imgsz: tuple[int, int],
              match_iou: float) -> list[np.ndarray]:
        if not self.nms_free:
            return outs
        import torch

        aligned = refs[0].copy()  # a row the export does not hold is not compared: recall judges it
        for b in range(len(refs[0])):
            every = [self.instances(torch.from_numpy(x[0][b].astype(np.float32)), x, b, imgsz) for x in (refs, outs)]
            for i, j in pairs(self.similarity(*every), match_iou):
                aligned[b, i] = outs[0][b, j]
        return [aligned, *outs[1:]]

    def predictions(self, outputs: list[np.ndarray], imgsz: tuple[int, int]) -> list[Instances]:
        rows = self.rows(outputs[0], VAL_CONF, VAL_IOU, VAL_MAX_DET, multi_label=True)
        return [self.instances(r, outputs, b, imgsz) for b, r in enumerate(rows)]

    def box_overlap(self, a, b) -> np.ndarray:
        from ultralytics.utils.metrics import box_iou

        return box_iou(a, b).numpy()

    def similarity(self, a: Instances, b: Instances, slack: float = 0.0) -> np.ndarray:
        if not len(a) or not len(b):
            return np.zeros((len(a), len(b)))
        return self.box_overlap(a.boxes, b.boxes) * same_class(a, b)

    def overlaps(self, truth: Instances, pred: Instances) -> dict[str, np.ndarray]:
        return {"box": self.box_overlap(truth.boxes, pred.boxes)}


@dataclass(frozen=True)
class RTDETR(Detect):
    """RT-DETR's decoder: its top-k queries, normalised cxcywh boxes scaled to the input as ultralytics does. It
    has no NMS and no other form; ultralytics' ``end2end`` (the YOLO one-to-one head) stays False for it."""

    box_name: ClassVar[str] = "boxes (normalised cxcywh)"

    @property
    def nms_free(self) -> bool:
        return True

    def describe(self) -> str:
        return f"RT-DETR decoder with {self.nc} classes"

    @property
    def outputs(self) -> tuple[Output, ...]:
        fields = (Field(self.box_name, slice(0, 4), UNIT), Field("score", slice(4, 5), UNIT),
                  Field("class index", slice(5, 6), OWN))
        return (Output("output0", (None, None, 6), 2, fields),)

    def instances(self, rows, outputs: list[np.ndarray], image: int, imgsz: tuple[int, int]) -> Instances:
        import torch
        from ultralytics.utils.ops import xywh2xyxy

        h, w = imgsz
        return Instances(xywh2xyxy(rows[:, :4]) * torch.tensor([w, h, w, h]), rows[:, 4], rows[:, 5])
