"""Safe loading of YOLOv8 checkpoints, fork module paths resolved to the attention zoo.

Before anything is unpickled, the checkpoint's globals are read statically and sorted into allowed
(torch and ultralytics layers, the zoo, plugin modules, a few plain data types), resolved (a class
pickled under a fork module path that does not exist here, with a zoo class of the same name), and
unresolved or unsafe. Only a checkpoint with neither of the last two is loaded, through torch's
``weights_only`` unpickler with exactly the allowed globals; ``trust=True`` lifts the unsafe check.
"""

import copy
import datetime
import importlib
import importlib.util
import inspect
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..errors import AttnDeployError
from ..files import write_atomic
from ..models import PUBLISHED_NAMES, registry
from ..models.structure import fit_problem

# Plain data types that ultralytics checkpoints carry besides the model (train args, metrics).
SAFE_DATA_TYPES = frozenset({
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "types.SimpleNamespace", "argparse.Namespace",
    "ultralytics.utils.IterableSimpleNamespace", "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "_codecs.encode",
})
LAYER_PACKAGES = ("torch.nn.", "ultralytics.nn.")


@dataclass
class LoadedModel:
    """A detector as loaded: fp32, eval mode, with what ultralytics knows about it."""

    model: nn.Module
    source: Path
    names: dict[int, str]
    stride: int
    task: str
    imgsz: tuple[int, int] | None = None  # the training size, where the checkpoint records it
    resolved: dict[str, str] = field(default_factory=dict)

    @property
    def yaml_name(self) -> str:
        return Path(getattr(self.model, "yaml", {}).get("yaml_file", self.source.name)).stem

    def check_input(self, imgsz: tuple[int, int], batch: int) -> None:
        """Refuse an input shape the detector cannot take, before any work is done at it."""
        h, w = imgsz
        if batch < 1:
            raise AttnDeployError(f"--batch must be at least 1, got {batch}")
        if h % self.stride or w % self.stride or h <= 0 or w <= 0:
            raise AttnDeployError(f"--imgsz {h},{w} must be positive multiples of the model stride {self.stride}")


@dataclass
class GlobalsPlan:
    """How every global named in a checkpoint will be treated."""

    allowed: dict[str, object] = field(default_factory=dict)
    resolved: dict[str, object] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)


def import_plugin(path: Path) -> ModuleType:
    """Import a user's file of module definitions, so that its classes can resolve fork paths."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise AttnDeployError(f"plugin {path} is not a Python file")
    name = f"attn_deploy_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise AttnDeployError(f"plugin {path} failed to import: {type(e).__name__}: {e}") from e
    return module


def _lookup(full_name: str) -> object | None:
    module_name, _, attr = full_name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return None
    return getattr(module, attr, None)


def _is_allowed(full_name: str, obj: object, plugins: list[ModuleType]) -> bool:
    if full_name in SAFE_DATA_TYPES or full_name.startswith("numpy.dtypes."):
        return True
    home = getattr(obj, "__module__", "") or ""
    if home.startswith("attn_deploy.models") or any(home == p.__name__ for p in plugins):
        return True
    is_layer = inspect.isclass(obj) and issubclass(obj, nn.Module)
    return is_layer and full_name.startswith(LAYER_PACKAGES)


def _published_names(plugins: list[ModuleType]) -> dict[str, object]:
    names = dict(PUBLISHED_NAMES)
    for plugin in plugins:
        names.update({k: v for k, v in vars(plugin).items() if getattr(v, "__module__", None) == plugin.__name__})
    return names


def plan_globals(names: list[str], plugins: list[ModuleType]) -> GlobalsPlan:
    """Sort a checkpoint's globals into allowed, resolved, unresolved and unsafe."""
    plan, published = GlobalsPlan(), _published_names(plugins)
    for full_name in names:
        obj = _lookup(full_name)
        short = full_name.rpartition(".")[2]
        if obj is not None and _is_allowed(full_name, obj, plugins):
            plan.allowed[full_name] = obj
        elif obj is None and short in published:
            plan.resolved[full_name] = published[short]
        elif obj is None:
            plan.unresolved.append(full_name)
        else:
            plan.unsafe.append(full_name)
    return plan


def _scan(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:
        raise AttnDeployError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def _refuse(path: Path, plan: GlobalsPlan, trust: bool) -> None:
    if plan.unresolved:
        listed = "\n  ".join(plan.unresolved)
        raise AttnDeployError(
            f"{path} pickles classes that are not available here and match no zoo module:\n  {listed}\n"
            "Supply their definitions with --plugin FILE.py (a file defining classes of the same names)."
        )
    if plan.unsafe and not trust:
        listed = "\n  ".join(plan.unsafe)
        raise AttnDeployError(
            f"{path} refers to objects outside the allow-list, which could run code when unpickled:\n  {listed}\n"
            "Nothing was executed. If you trust this file, pass --trust-checkpoint."
        )


class _ResolvingUnpickler(pickle.Unpickler):
    """A plain unpickler (for trusted files) that maps fork paths to their resolved classes."""

    resolved: dict[str, object] = {}

    def find_class(self, module: str, name: str):
        return self.resolved.get(f"{module}.{name}") or super().find_class(module, name)


def _unpickle(path: Path, plan: GlobalsPlan, trust: bool) -> object:
    try:
        if trust:
            unpickler = type("Unpickler", (_ResolvingUnpickler,), {"resolved": plan.resolved})
            pickle_module = ModuleType("attn_deploy_pickle")
            pickle_module.Unpickler, pickle_module.load = unpickler, pickle.load
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
        entries = [*plan.allowed.values(), *[(obj, name) for name, obj in plan.resolved.items()]]
        with torch.serialization.safe_globals(entries):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AttnDeployError(f"{path} could not be unpickled: {type(e).__name__}: {e}") from e


def _check_fit(model: nn.Module, plan: GlobalsPlan) -> None:
    resolved = {id(obj): name for name, obj in plan.resolved.items()}
    for path, module in model.named_modules():
        name = resolved.get(id(type(module)))
        if name is None or not hasattr(type(module), "config_from"):
            continue
        problem = fit_problem(module, type(module))
        if problem:
            raise AttnDeployError(
                f"{name} at {path} was resolved by name to the zoo's {type(module).__name__}, but its saved "
                f"parameters do not fit it ({problem}). Supply the fork's definition with --plugin FILE.py."
            )


def _model_from(obj: object, path: Path, yaml: Path | None) -> nn.Module:
    if isinstance(obj, dict) and isinstance(obj.get("ema") or obj.get("model"), nn.Module):
        return obj.get("ema") or obj["model"]
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if yaml is None:
            raise AttnDeployError(f"{path} is a state dict: give the model YAML with --yaml")
        return _model_from_state_dict(obj, yaml)
    raise AttnDeployError(f"{path} holds neither an ultralytics checkpoint, a model nor a state dict")


def _model_from_state_dict(state: dict, yaml_path: Path) -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel

    try:
        model = DetectionModel(str(yaml_path), verbose=False)
        model.load_state_dict(state)
    except Exception as e:
        raise AttnDeployError(f"the state dict does not fit {yaml_path}: {type(e).__name__}: {e}") from e
    return model


def load(path: str | Path, plugins: list[Path] = (), trust: bool = False, yaml: Path | None = None) -> LoadedModel:
    """Load ``path`` safely as an fp32 eval-mode detector (ultralytics dict, whole model or state dict)."""
    path = Path(path)
    if not path.is_file():
        raise AttnDeployError(f"checkpoint {path} does not exist")
    registry.register()
    modules = [import_plugin(p) for p in plugins]
    plan = plan_globals(_scan(path), modules)
    _refuse(path, plan, trust)
    obj = _unpickle(path, plan, trust)
    model = _model_from(obj, path, yaml).float().eval()
    model.requires_grad_(False)
    _check_fit(model, plan)
    return _describe(model, path, obj, plan)


def _describe(model: nn.Module, path: Path, obj: object, plan: GlobalsPlan) -> LoadedModel:
    names = getattr(model, "names", None) or {i: str(i) for i in range(getattr(model, "nc", 80))}
    stride = getattr(model, "stride", torch.tensor([32.0]))
    train_args = obj.get("train_args") if isinstance(obj, dict) else None
    return LoadedModel(
        model=model,
        source=path,
        names=dict(names),
        stride=int(max(stride)),
        task=getattr(model, "task", "detect"),
        imgsz=_pair((train_args or {}).get("imgsz")),
        resolved={k: f"{v.__module__}.{v.__name__}" for k, v in plan.resolved.items()},
    )


def _pair(size: int | list | None) -> tuple[int, int] | None:
    if isinstance(size, int):
        return (size, size)
    return tuple(size) if isinstance(size, (list, tuple)) and len(size) == 2 else None


def save_checkpoint(model: nn.Module, path: str | Path, imgsz: int = 640) -> Path:
    """Save ``model`` as ultralytics saves a finished ``best.pt`` (fp16, no optimizer, its task), atomically."""
    import ultralytics

    from ..heads import task_of

    ckpt = {
        "date": datetime.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": copy.deepcopy(model).half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": task_of(model), "imgsz": imgsz, "model": model.yaml.get("yaml_file")},
        "train_metrics": None,
        "train_results": None,
    }
    return write_atomic(Path(path), lambda tmp: torch.save(ckpt, tmp))
