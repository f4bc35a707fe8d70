"""Seeded YOLOv8, YOLO11 and YOLO26 detectors built from the shipped zoo YAMLs (the test fixtures, the demo model,
the study's detectors), the plain detectors of ultralytics' own YAMLs they are compared with, and each zoo module
alone as its YAML configures it."""

from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from . import FAMILIES, ZOO, registry

P5_LAYER = FAMILIES["yolov8"]  # where the YOLOv8 zoo YAMLs put the attention module: after SPPF at P5
# A channel that barely varies over the calibration images (a variance near 0) would be amplified up to 30 times
# per layer, so that rounding noise decides the output: its variance is floored here, a gain of at most 6.
VARIANCE_FLOOR = 0.03


def _zoo_modules(model: nn.Module) -> list[nn.Module]:
    zoo_types = tuple({entry.module for entry in ZOO.values()})
    return [m for m in model.modules() if isinstance(m, zoo_types)]


@torch.no_grad()
def _wake_zero_parameters(modules: list[nn.Module], generator: torch.Generator) -> None:
    # Published inits leave some attention paths off (CCNet's gamma, EfficientViT's projection BN
    # weight, the attention biases); an untrained fixture with them at zero would prove nothing.
    for module in modules:
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)


def _calibration_batch(generator: torch.Generator, imgsz: int) -> torch.Tensor:
    from ultralytics.utils import ASSETS

    from ..parity import letterbox_image

    images = [torch.from_numpy(letterbox_image(p, (imgsz, imgsz))) for p in sorted(ASSETS.glob("*.jpg"))]
    return torch.stack([*images, *torch.rand(2, 3, imgsz, imgsz, generator=generator)])


@torch.no_grad()
def calibrate_norms(model: nn.Module, batch: torch.Tensor, momentum: float | None = None) -> None:
    """Every batch norm's statistics from one training-mode pass over ``batch`` (a cumulative average: the statistics
    of this pass), each variance floored at ``VARIANCE_FLOOR``, then ``momentum`` (default: each norm's own); the
    model left in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum if momentum is None else momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(batch)
    for m, momentum in zip(norms, momenta):
        m.running_var.clamp_(min=VARIANCE_FLOOR)
        m.momentum = momentum
    model.eval()


def _calibrate_norms(model: nn.Module, generator: torch.Generator, imgsz: int = 640) -> None:
    # Running statistics measured on the bundled images and on noise, at the export size, keep
    # activations in the range a trained model sees: with the default statistics the random
    # detector's outputs are near constant, or so ill-conditioned that fp32 rounding moves boxes. Without the
    # variance floor, ncnn's Winograd convolutions alone moved a seeded YOLO11n-CGA's boxes by 2.2 px on noise.
    calibrate_norms(model, _calibration_batch(generator, imgsz))


NO_ATTENTION = "none"  # the family's plain detector, from ultralytics' own YAML (YOLO11's and YOLO26's keep C2PSA)


def _cfg(name: str, family: str = "yolov8") -> dict:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; the zoo ships {', '.join(FAMILIES)}")
    if name == NO_ATTENTION:
        from ultralytics.nn.tasks import yaml_model_load

        return dict(yaml_model_load(f"{family}n.yaml"))
    return yaml.safe_load(ZOO[name].task_yaml("detect", family).read_text())


def _seeded(cfg: dict, scale: str, nc: int, seed: int, yaml_file: str) -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    registry.register()
    torch.manual_seed(seed)
    return DetectionModel({**cfg, "scale": scale, "nc": nc, "yaml_file": yaml_file}, nc=nc, verbose=False)


def _live(model: nn.Module, seed: int, imgsz: int = 640, attention: list[nn.Module] | None = None) -> nn.Module:
    """``model`` with its ``attention`` modules (default: the zoo's) awake and its norms calibrated at ``imgsz``."""
    generator = torch.Generator().manual_seed(seed)
    _wake_zero_parameters(_zoo_modules(model) if attention is None else attention, generator)
    _calibrate_norms(model, generator, imgsz)
    return model


def build_detector(name: str, scale: str = "n", nc: int = 80, seed: int = 0, family: str = "yolov8",
                   imgsz: int = 640) -> nn.Module:
    """A ``family`` (yolov8, yolo11, yolo26) ``scale`` detector with zoo module ``name`` at P5 (or ``none``), seeded
    and with live attention, its norms calibrated at ``imgsz``."""
    return _live(_seeded(_cfg(name, family), scale, nc, seed, f"{family}{scale}-{name}.yaml"), seed, imgsz)


def build_from_yaml(path: str | Path, scale: str = "n", nc: int = 80, seed: int = 0, imgsz: int = 640) -> nn.Module:
    """A seeded ``scale`` detector from any detection YAML (a file, or a name ultralytics ships such as
    ``yolo12n.yaml``), zoo modules usable in it, its norms calibrated at ``imgsz`` as the zoo detectors' are."""
    from ultralytics.nn.tasks import yaml_model_load

    return _live(_seeded(dict(yaml_model_load(path)), scale, nc, seed, Path(path).name), seed, imgsz)


def build_detector_with(make: Callable[[int], nn.Module], scale: str = "n", nc: int = 80, seed: int = 0,
                        imgsz: int = 640) -> nn.Module:
    """A YOLOv8 ``scale`` detector with ``make(channels)`` at P5 where the zoo puts attention: code of your own,
    seeded, with live attention, its norms calibrated at ``imgsz`` with the module in place."""
    # SimAM keeps the channels and has no parameters: a placeholder
    model = _seeded(_cfg("simam"), scale, nc, seed, f"yolov8{scale}-simam.yaml")
    placeholder = model.model[P5_LAYER]
    module = make(model.model[P5_LAYER - 1].cv2.conv.out_channels)
    module.i, module.f = placeholder.i, placeholder.f  # ultralytics' layer routing reads these
    module.type, module.np = type(module).__name__, sum(p.numel() for p in module.parameters())
    model.model[P5_LAYER] = module
    return _live(model, seed, imgsz, [module])


def build_module(name: str, channels: int, seed: int = 0) -> nn.Module:
    """Zoo module ``name`` alone for ``channels`` input channels, with the arguments its YAML gives it, in eval."""
    cfg = _cfg(name)
    row = next(r for r in cfg["backbone"] + cfg["head"] if r[2] == ZOO[name].module.__name__)
    torch.manual_seed(seed)
    module = nn.Sequential(ZOO[name].module(channels, *row[3]))
    _wake_zero_parameters(_zoo_modules(module), torch.Generator().manual_seed(seed))
    return module.eval()
