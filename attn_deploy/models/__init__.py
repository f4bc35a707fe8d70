"""The attention zoo: the modules people add to YOLOv8, in their published form.

Each module keeps the export-unfriendly code of its paper's reference implementation: it is the
reference that exports are checked against. ``register()`` makes every module usable by name in
ultralytics model YAMLs; ``ZOO`` lists the shipped detector YAMLs.
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


@dataclass(frozen=True)
class ZooEntry:
    """One shipped detector: a YOLOv8 with ``module`` after SPPF at P5."""

    name: str
    module: type[nn.Module]
    paper: str
    variant: str = "published defaults"

    @property
    def yaml(self) -> Path:
        return self.task_yaml("detect")

    def task_yaml(self, task: str) -> Path:
        """The YAML of the model with ``task``'s head (a path that may not exist: see ``tasks``)."""
        return CFG_DIR / f"yolov8-{self.name}{TASK_SUFFIXES[task]}.yaml"

    @property
    def tasks(self) -> list[str]:
        """The tasks whose YAML ships: every module has detect."""
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

__all__ = ["ZOO", "PUBLISHED_NAMES", "TASK_SUFFIXES", "ZooEntry", "register", *sorted({o.__name__ for o in PUBLISHED_NAMES.values()})]
