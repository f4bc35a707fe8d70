"""The attention zoo: the modules people add to YOLOv8, YOLO11 and YOLO26, in their published form.

Each module keeps the export-unfriendly code of its paper's reference implementation: it is the
reference that exports are checked against. ``register()`` makes every module usable by name in
ultralytics model YAMLs; ``ZOO`` lists the shipped detector YAMLs, one per family (``FAMILIES``).
"""

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .criss_cross import INF, CrissCrossAttention
from .efficientvit import CascadedGroupAttention, Conv2d_BN, LocalWindowAttention
from .gam import GAMAttention
from .gather_excite import ConvMlp, GatherExcite
from .mhsa import MHSA
from .registry import register
from .s2attention import S2Attention, SplitAttention
from .simam import SimAM

CFG_DIR = Path(__file__).parent / "cfg"
TASK_SUFFIXES = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}  # as ultralytics names its YAMLs
# Each family's zoo YAMLs are ultralytics' own with the module inserted at P5 as this layer: after SPPF in YOLOv8,
# after C2PSA in YOLO11 and YOLO26.
FAMILIES = {"yolov8": 10, "yolo11": 11, "yolo26": 11}


@dataclass(frozen=True)
class ZooEntry:
    """One zoo module and its shipped detectors: a YOLOv8 with ``module`` after SPPF at P5, a YOLO11 and a YOLO26
    with it after C2PSA at P5."""

    name: str
    module: type[nn.Module]
    paper: str
    variant: str = "published defaults"

    @property
    def yaml(self) -> Path:
        return self.task_yaml("detect")

    def task_yaml(self, task: str, family: str = "yolov8") -> Path:
        """The YAML of ``family``'s model with ``task``'s head (a path that may not exist: see ``tasks``)."""
        return CFG_DIR / f"{family}-{self.name}{TASK_SUFFIXES[task]}.yaml"

    @property
    def yamls(self) -> list[Path]:
        """Every shipped YAML: each family's detector, then YOLOv8's other tasks."""
        return [self.task_yaml("detect", f) for f in FAMILIES] + [self.task_yaml(t) for t in self.tasks[1:]]

    @property
    def tasks(self) -> list[str]:
        """The tasks whose YOLOv8 YAML ships: every module has detect."""
        return [task for task in TASK_SUFFIXES if self.task_yaml(task).is_file()]


_SIMAM = "Yang et al., SimAM, ICML 2021"
_S2 = "Yu et al., S2-MLPv2, arXiv 2108.01072"
_GE = "Hu et al., Gather-Excite, NeurIPS 2018"
_CGA = "Liu et al., EfficientViT (Cascaded Group Attention), CVPR 2023"
_GAM = "Liu et al., GAM, arXiv 2112.05561"
_CC = "Huang et al., CCNet (Criss-Cross), ICCV 2019"
_MHSA = "Vaswani et al., Attention Is All You Need, NeurIPS 2017"

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("simam", SimAM, _SIMAM),
        ZooEntry("s2attention", S2Attention, _S2),
        ZooEntry("ge", GatherExcite, _GE, "parameter-free gather, global extent"),
        ZooEntry("ge-e2", GatherExcite, _GE, "parameter-free gather, extent 2"),
        ZooEntry("ge-theta", GatherExcite, _GE, "parameterised gather, global extent (adaptive pool to 7)"),
        ZooEntry("ge-theta-e2", GatherExcite, _GE, "parameterised gather, extent 2"),
        ZooEntry("cga", LocalWindowAttention, _CGA, "LocalWindowAttention, window 7, 4 heads"),
        ZooEntry("gam", GAMAttention, _GAM),
        ZooEntry("cca", CrissCrossAttention, _CC),
        ZooEntry("mhsa", MHSA, _MHSA, "nn.MultiheadAttention, 8 heads (baseline)"),
    )
}

# Every name a fork may have pickled a zoo object under, mapped to the zoo object.
PUBLISHED_NAMES: dict[str, object] = {
    **{obj.__name__: obj for obj in (
        SimAM, S2Attention, SplitAttention, GatherExcite, ConvMlp, CascadedGroupAttention,
        LocalWindowAttention, Conv2d_BN, GAMAttention, CrissCrossAttention, MHSA, INF,
    )},
    "GAM": GAMAttention,
    "GAM_Attention": GAMAttention,
    "CCA": CrissCrossAttention,
}

__all__ = ["FAMILIES", "ZOO", "PUBLISHED_NAMES", "TASK_SUFFIXES", "ZooEntry", "register", *sorted({o.__name__ for o in PUBLISHED_NAMES.values()})]
