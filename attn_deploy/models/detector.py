"""Seeded YOLOv8, YOLO11 and YOLO26 detectors built from the shipped zoo YAMLs (the test fixtures, the demo model,
the study's detectors), the plain detectors of ultralytics' own YAMLs they are compared with, and each zoo module
alone as its YAML configures it."""

from collections.abc import Callable

import torch
import yaml
from torch import nn

from . import FAMILIES, ZOO, registry

P5_LAYER = FAMILIES["yolov8"]  # where the YOLOv8 zoo YAMLs put the attention module: after SPPF at P5


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
def _calibrate_norms(model: nn.Module, generator: torch.Generator, imgsz: int = 640) -> None:
    # Running statistics measured on the bundled images and on noise, at the export size, keep
    # activations in the range a trained model sees: with the default statistics the random
    # detector's outputs are near constant, or so ill-conditioned that fp32 rounding moves boxes.
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = None
    model.train()
    model(_calibration_batch(generator, imgsz))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


NO_ATTENTION = "none"  # the family's plain detector, from ultralytics' own YAML (YOLO11's and YOLO26's keep C2PSA)


def _cfg(name: str, family: str = "yolov8") -> dict:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; the zoo ships {', '.join(FAMILIES)}")
    if name == NO_ATTENTION:
        from ultralytics.nn.tasks import yaml_model_load

        return dict(yaml_model_load(f"{family}n.yaml"))
    return yaml.safe_load(ZOO[name].task_yaml("detect", family).read_text())


def _seeded(name: str, scale: str, nc: int, seed: int, family: str = "yolov8") -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    registry.register()
    cfg = _cfg(name, family)
    cfg.update(scale=scale, nc=nc, yaml_file=f"{family}{scale}-{name}.yaml")
    torch.manual_seed(seed)
    return DetectionModel(cfg, nc=nc, verbose=False)


def build_detector(name: str, scale: str = "n", nc: int = 80, seed: int = 0, family: str = "yolov8") -> nn.Module:
    """A ``family`` (yolov8, yolo11, yolo26) ``scale`` detector with zoo module ``name`` at P5 (or ``none``), seeded
    and with live attention."""
    model = _seeded(name, scale, nc, seed, family)
    generator = torch.Generator().manual_seed(seed)
    _wake_zero_parameters(_zoo_modules(model), generator)
    _calibrate_norms(model, generator)
    return model


def build_detector_with(make: Callable[[int], nn.Module], scale: str = "n", nc: int = 80, seed: int = 0,
                        imgsz: int = 640) -> nn.Module:
    """A YOLOv8 ``scale`` detector with ``make(channels)`` at P5 where the zoo puts attention: code of your own,
    seeded, with live attention, its norms calibrated at ``imgsz`` with the module in place."""
    model = _seeded("simam", scale, nc, seed)  # SimAM keeps the channels and has no parameters: a placeholder
    placeholder = model.model[P5_LAYER]
    module = make(model.model[P5_LAYER - 1].cv2.conv.out_channels)
    module.i, module.f = placeholder.i, placeholder.f  # ultralytics' layer routing reads these
    module.type, module.np = type(module).__name__, sum(p.numel() for p in module.parameters())
    model.model[P5_LAYER] = module
    generator = torch.Generator().manual_seed(seed)
    _wake_zero_parameters([module], generator)
    _calibrate_norms(model, generator, imgsz)
    return model


def build_module(name: str, channels: int, seed: int = 0) -> nn.Module:
    """Zoo module ``name`` alone for ``channels`` input channels, with the arguments its YAML gives it, in eval."""
    cfg = _cfg(name)
    row = next(r for r in cfg["backbone"] + cfg["head"] if r[2] == ZOO[name].module.__name__)
    torch.manual_seed(seed)
    module = nn.Sequential(ZOO[name].module(channels, *row[3]))
    _wake_zero_parameters(_zoo_modules(module), torch.Generator().manual_seed(seed))
    return module.eval()
