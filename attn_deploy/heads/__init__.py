"""What each task head outputs, and how its outputs are compared and scored: one small spec per head.

A spec (``Head``) names the outputs and what each run of their channels holds (box pixels, scores, mask
coefficients, prototypes, keypoints, angles; the parity tolerance follows it), turns one image's outputs
into instances as a user gets them (NMS, or the head's own top-k), says when two instances are the same
(the detection-level matcher: box IoU, rotated-box IoU, mask IoU, keypoint OKS, top-k agreement), and how
predictions meet labels for mAP as ``yolo val`` scores them. ``parity`` and ``accuracy`` ask the spec and
know no task.
"""

import copy

from torch import nn

from ..errors import AttnDeployError
from .base import Field, Head, Instances, Labels, Output, pairs
from .classify import Classify
from .detect import RTDETR, Detect
from .obb import OBB
from .pose import Pose
from .segment import Segment

__all__ = ["OBB", "RTDETR", "Classify", "Detect", "Field", "Head", "Instances", "Labels", "Output", "Pose", "Segment",
           "head_module", "in_form", "of_model", "pairs", "task_of"]


def _kinds():
    """ultralytics' head classes, most specific first, each with the spec that reads it."""
    from ultralytics.nn import modules

    return [
        (modules.Segment, lambda m: Segment(m.nc, _end2end(m), m.nm)),
        (modules.Pose, lambda m: Pose(m.nc, _end2end(m), tuple(m.kpt_shape))),
        (modules.OBB, lambda m: OBB(m.nc, _end2end(m))),
        (modules.Detect, lambda m: Detect(m.nc, _end2end(m))),
        (modules.RTDETRDecoder, lambda m: RTDETR(m.nc)),
        (modules.Classify, lambda m: Classify(m.linear.out_features)),
    ]


def _end2end(head: nn.Module) -> bool:
    """Whether a YOLOv10/YOLO26 head runs its one-to-one branch (ultralytics' ``end2end``: selected, or the only
    branch left after fusion)."""
    return bool(getattr(head, "end2end", False))


def head_module(model: nn.Module) -> nn.Module | None:
    """The model's head: the last ultralytics head module it runs (a rewrite may wrap it, so searched for)."""
    types = tuple(kind for kind, _ in _kinds())
    found = [m for m in model.modules() if isinstance(m, types)]
    return found[-1] if found else None


def in_form(model: nn.Module, end2end: bool) -> nn.Module:
    """``model`` with its head in the end-to-end form (YOLOv10/YOLO26's one-to-one branch, boxes without NMS) or
    not, as ultralytics selects it; a copy where the form changes."""
    head = head_module(model)
    if head is None or of_model(model).end2end == end2end:
        return model
    if end2end and getattr(head, "one2one_cv2", None) is None:
        raise AttnDeployError(f"the model's {type(head).__name__} head has no one-to-one branch, so it has no "
                              "end-to-end form (YOLOv10 and YOLO26 have one)")
    model = copy.deepcopy(model)
    head_module(model).end2end = end2end
    return model


def task_of(model: nn.Module) -> str:
    """The task of ``model``'s head, as ultralytics names it; ``detect`` where the head is unknown."""
    head = head_module(model)
    return "detect" if head is None else of_model(model).task


def of_model(model: nn.Module) -> Head:
    """The spec of ``model``'s head, in the form the model is in (end-to-end or NMS)."""
    head = head_module(model)
    if head is None:
        layers = getattr(model, "model", None)
        last = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else model
        raise AttnDeployError(
            f"the model ends in {type(last).__name__}, which is none of the heads attn-deploy knows (ultralytics' "
            "Detect, Segment, Pose, OBB, Classify, RTDETRDecoder and their subclasses), so its outputs cannot be "
            "compared at the detection level")
    return next(spec(head) for kind, spec in _kinds() if isinstance(head, kind))
