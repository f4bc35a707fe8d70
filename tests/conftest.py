"""Fixtures: seeded detectors from the shipped YAMLs, saved as a fork would have saved them."""

import contextlib
import sys
import types
from pathlib import Path

import pytest

from attn_deploy.loading import save_checkpoint
from attn_deploy.models import ZOO
from attn_deploy.models.detector import build_detector

FORK_PATH = "ultralytics.nn.extra_modules.attention"  # a module path that exists only in the fork


@contextlib.contextmanager
def pickled_under(module_path: str, objects: dict[str, object]):
    """Make each object pickle as ``module_path.<name>``, as it would from the fork's source tree."""
    fake = types.ModuleType(module_path)
    homes = {name: (obj.__module__, obj.__qualname__) for name, obj in objects.items()}
    for name, obj in objects.items():
        setattr(fake, name, obj)
        obj.__module__, obj.__qualname__ = module_path, name
    sys.modules[module_path] = fake
    try:
        yield
    finally:
        del sys.modules[module_path]
        for name, obj in objects.items():
            obj.__module__, obj.__qualname__ = homes[name]


def zoo_objects_in(model) -> dict[str, object]:
    """The zoo classes, and functions held as attributes, that pickling ``model`` names."""
    zoo_home = "attn_deploy.models"
    found = {type(m) for m in model.modules() if type(m).__module__.startswith(zoo_home)}
    found |= {v for m in model.modules() for v in vars(m).values() if callable(v)
              and getattr(v, "__module__", "").startswith(zoo_home)}
    return {obj.__name__: obj for obj in found}


def save_fork_checkpoint(name: str, path: Path, module_path: str = FORK_PATH, renames: dict | None = None) -> Path:
    """Save zoo detector ``name`` as a fork would: its zoo objects under ``module_path``, maybe renamed."""
    return save_fork_model(build_detector(name), path, module_path, renames)


def save_fork_model(model, path: Path, module_path: str = FORK_PATH, renames: dict | None = None) -> Path:
    objects = {(renames or {}).get(k, k): v for k, v in zoo_objects_in(model).items()}
    with pickled_under(module_path, objects):
        return save_checkpoint(model, path)


@pytest.fixture(scope="session")
def fork_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Every zoo detector at YOLOv8n, seed 0, pickled under a fork module path."""
    root = tmp_path_factory.mktemp("fork")
    return {name: save_fork_checkpoint(name, root / f"yolov8n-{name}.pt") for name in ZOO}
