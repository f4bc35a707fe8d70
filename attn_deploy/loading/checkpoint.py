"""``load()``: a checkpoint becomes an fp32 eval-mode model, without running code the file chooses.

The file is read as torch's zip format (``torchzip``); every global its pickle names is sorted
(``names``) before anything is unpickled, and the pickle is then run by the restricted unpickler
(``unpickler``), which calls nothing but reviewed data rebuilds. Classes pickled under names that do
not exist here resolve by name (``resolve``); ``--fork`` and ``--plugin`` bring the user's own code in
(``fork``). ``trust=True`` uses a plain unpickler instead, which runs whatever the file names.
"""

import copy
import datetime
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..errors import AttnDeployError
from ..files import write_atomic
from ..models import registry
from . import compat, names, resolve, torchzip, unpickler, values
from .fork import fork_trees, import_plugin, mounted

TRUST_HINT = ("Only if you trust this file, --trust-checkpoint unpickles it with a plain unpickler, which runs any "
              "code the file names.")
MAX_MODULE_VISITS = 1_000_000  # walks of the module tree (.float(), .eval()) visit a shared submodule once per path


@dataclass
class LoadedModel:
    """A detector as loaded: fp32, eval mode, with what ultralytics knows about it."""

    model: nn.Module
    source: Path
    names: dict[int, str]
    stride: int
    task: str
    imgsz: tuple[int, int] | None = None  # the training size, where the checkpoint records it
    resolved: dict[str, str] = field(default_factory=dict)  # pickled name -> the zoo or plugin object it stands for
    notes: list[str] = field(default_factory=list)  # per class rebuilt from the zoo: the reference is the zoo's

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


def _refusal(path: Path, said: str) -> AttnDeployError:
    return AttnDeployError(f"{path} was refused: {said}. Nothing the file chose was run. {TRUST_HINT}")


def _check_plan(path: Path, plan: names.Plan, fork: Path | None) -> None:
    """One message for what stops the load before anything is unpickled: refusals first, then missing code."""
    if refused := plan.having("refused"):
        raise _refusal(path, "it names " + "; ".join(f"{n.full}, which {n.why}" for n in refused))
    if broken := plan.having("broken"):
        by_module: dict[str, list[str]] = {}
        for n in broken:
            by_module.setdefault(f"{n.module} failed to import: {n.why}", []).append(n.full)
        listed = "\n  ".join(f"{why}; pickled classes that need it: {', '.join(fulls)}"
                              for why, fulls in by_module.items())
        raise AttnDeployError(f"{path} pickles classes from the fork or plugin code, which did not import:\n  {listed}")
    if unresolved := plan.having("unresolved"):
        listed = "\n  ".join(n.full for n in unresolved)
        hint = (f"The fork at {fork} defines none of them, under those module paths or by class name: supply them "
                "with --plugin FILE.py (a file defining classes of the same names)." if fork is not None else
                "Point at the fork's source with --fork DIR (its repository root), or supply the classes with "
                "--plugin FILE.py (a file defining classes of the same names).")
        raise AttnDeployError(
            f"{path} pickles classes that are not available here and match no zoo module:\n  {listed}\n{hint}")


def _unpickle_safe(path: Path, by_name: resolve.ByName, plugins: list[ModuleType], fork: Path | None) -> object:
    try:
        archive = torchzip.open_archive(path)
    except torchzip.NotTorchZip as e:
        hint = " attn-deploy reads only torch's zip format (torch >= 1.6). " + TRUST_HINT if e.legacy else ""
        raise AttnDeployError(f"{path} is not a readable PyTorch checkpoint: {e}.{hint}") from None
    resolver = names.Names([p.__name__ for p in plugins], by_name)
    with archive:
        try:
            found = unpickler.globals_in(archive.data_pkl)
        except Exception as e:
            raise AttnDeployError(f"{path} is not a readable PyTorch checkpoint: its data.pkl is truncated or not a "
                                  f"pickle ({type(e).__name__}: {e})") from None
        _check_plan(path, resolver.plan(found), fork)
        obj, functions = unpickler.unpickle(archive.data_pkl, resolver, archive.storage)
    values.check_values(obj, functions)
    return obj


class _TrustedUnpickler(pickle.Unpickler):
    """A plain unpickler (for trusted files) that resolves missing fork paths by name."""

    by_name: resolve.ByName

    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError) as e:
            missing = isinstance(e, AttributeError) or (
                isinstance(e, ModuleNotFoundError) and names.is_missing(module, e))
            found = self.by_name(f"{module}.{name}") if missing else None
            if found is None:
                raise
            return found


def _unpickle_trusted(path: Path, by_name: resolve.ByName) -> object:
    pickle_module = ModuleType("attn_deploy_trusted_pickle")
    pickle_module.Unpickler = type("Unpickler", (_TrustedUnpickler,), {"by_name": by_name})
    pickle_module.load = pickle.load
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)


def _unpickle(path: Path, by_name: resolve.ByName, plugins: list[ModuleType], trust: bool,
              fork: Path | None) -> object:
    """The checkpoint's object; every failure, expected or not, becomes one message naming the file."""
    try:
        return _unpickle_trusted(path, by_name) if trust else _unpickle_safe(path, by_name, plugins, fork)
    except unpickler.Refused as e:
        raise _refusal(path, f"{e.name} {e.why}") from None
    except AttnDeployError:
        raise
    except RecursionError:
        raise AttnDeployError(f"{path} was refused: it nests values too deeply to read") from None
    except Exception as e:
        raise AttnDeployError(f"{path} could not be unpickled: {type(e).__name__}: {e}") from None


def _visits(module: nn.Module, memo: dict[int, int], active: set[int]) -> int:
    """How many times a recursive walk from ``module`` visits modules (a submodule shared by n parents: n times)."""
    key = id(module)
    if key in active:
        raise AttnDeployError("its modules contain themselves")
    if key not in memo:
        active.add(key)
        children = {id(c): c for c in module._modules.values() if c is not None}
        memo[key] = 1 + sum(_visits(c, memo, active) for c in children.values())
        active.discard(key)
    return memo[key]


def _check_walkable(model: nn.Module, path: Path) -> None:
    """Refuse a module graph that every walk over it (.float(), .eval(), export) would never finish."""
    try:
        visits = _visits(model, {}, set())
    except (AttnDeployError, RecursionError) as e:
        raise AttnDeployError(f"{path} was refused: {e or 'its modules nest too deeply'}") from None
    if visits > MAX_MODULE_VISITS:
        raise AttnDeployError(f"{path} was refused: its modules share submodules so often that walking them "
                              f"would take {visits:.3g} steps")


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


def load(path: str | Path, plugins: list[Path] = (), trust: bool = False, yaml: Path | None = None,
         fork: Path | None = None) -> LoadedModel:
    """Load ``path`` as an fp32 eval-mode model (ultralytics dict, whole model or state dict), running no code the
    file chooses unless ``trust``; ``fork`` (a fork's source tree) and ``plugins`` bring in the user's own code."""
    path = Path(path)
    if not path.is_file():
        raise AttnDeployError(f"checkpoint {path} does not exist")
    registry.register()
    with mounted(fork_trees(fork, plugins)):
        modules = [import_plugin(p) for p in plugins]
        by_name = resolve.ByName(modules)
        obj = _unpickle(path, by_name, modules, trust, fork)
        try:
            return _prepared(obj, path, yaml, by_name)
        except AttnDeployError:
            raise
        except Exception as e:
            raise AttnDeployError(f"{path} holds no usable model: {type(e).__name__}: {e}") from None


def _prepared(obj: object, path: Path, yaml: Path | None, by_name: resolve.ByName) -> LoadedModel:
    model = _model_from(obj, path, yaml)
    _check_walkable(model, path)
    left_out = values.drop_inert(model)
    fixed = compat.apply(model)
    fields = _fields(model, obj, path)
    model = resolve.rebuild(model).float().eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, source=path, resolved=by_name.report(), notes=by_name.notes() + left_out + fixed,
                       **fields)


MAX_FILE_IMGSZ = 4096  # a training size recorded in the file becomes the default export size: bounded


def _fields(model: nn.Module, obj: object, path: Path) -> dict:
    """What the tool reads from the file beside the modules, each checked to be the plain type it is read as, so that
    no method of an object the file chose is called (see ``values``)."""
    def refuse(said: str) -> AttnDeployError:
        return AttnDeployError(f"{path} was refused: {said}")

    labels = vars(model).get("names")
    if labels is None:
        labels = {i: str(i) for i in range(_count(vars(model).get("nc", 80)))}
    elif type(labels) in (list, tuple) and all(type(v) is str for v in labels):
        labels = dict(enumerate(labels))
    elif not (type(labels) is dict and all(type(k) is int and type(v) is str for k, v in labels.items())):
        raise refuse("its class names are not a mapping of class ids to strings")
    task = vars(model).get("task", "detect")
    if type(task) is not str or not task.isidentifier() or len(task) > 32:
        raise refuse("its task is not a short name")
    if type(vars(model).get("yaml", {})) is not dict:
        raise refuse("its model yaml is not a dict")
    return {"names": labels, "stride": _stride(vars(model).get("stride"), refuse), "task": task,
            "imgsz": _training_size(obj, refuse)}


def _count(value: object) -> int:
    return value if type(value) is int and 0 < value <= 100_000 else 80


def _stride(stride: object, refuse) -> int:
    if stride is None:
        return 32
    if type(stride) in (torch.Tensor, nn.Parameter) and stride.numel():
        largest = float(stride.detach().float().max())
    elif type(stride) in (int, float) or (type(stride) in (list, tuple) and stride and all(
            type(s) in (int, float) for s in stride)):
        largest = float(max(stride) if type(stride) in (list, tuple) else stride)
    else:
        raise refuse("its stride is not a tensor or a number")
    if not 1 <= largest <= 1024 or largest != int(largest):
        raise refuse(f"its stride {largest} is not a whole number of pixels from 1 to 1024")
    return int(largest)


def _training_size(obj: object, refuse) -> tuple[int, int] | None:
    args = obj.get("train_args") if type(obj) is dict else None
    args = vars(args) if type(args) in unpickler.namespaces() else args
    if type(args) is not dict:
        return None
    size = _pair(args.get("imgsz"))
    if size is not None and not all(0 < s <= MAX_FILE_IMGSZ for s in size):
        raise refuse(f"it records a training size of {args.get('imgsz')}, beyond the {MAX_FILE_IMGSZ} px this tool "
                     "accepts from a file")
    return size


def _pair(size: object) -> tuple[int, int] | None:
    if type(size) is int:
        return (size, size)
    if type(size) in (list, tuple) and len(size) == 2 and all(type(s) is int for s in size):
        return tuple(size)
    return None


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
