"""Which globals a checkpoint may name, decided for every name before anything is unpickled.

A name is looked up only in the packages models are made of (``ROOTS``, plus the user's plugin
modules); modules elsewhere are never imported, since importing runs a module's top-level code. From
the few standard-library modules pickles use for data (``DATA_MODULES``), only the names the
unpickler itself rebuilds are allowed. Within the roots, a name may be:

- a class: any class, minus those whose own or base class's module loads, fetches or runs things
  (ultralytics' AutoBackend and its Model wrappers YOLO, RTDETR, SAM, ...; torch.hub, torch.jit, ...).
  Whether a class may also be *created* is the unpickler's decision (see ``unpickler.py``);
- a function held as an attribute (forks keep ``self.attn_fn = some_function``): referencing is not
  calling, so any function, minus loaders, downloaders and the like (``DENIED_MODULES``, ``DENIED_WORDS``);
- a dtype, layout or memory format (``torch.float16``).

A name whose module is missing here, or that its module lacks, resolves by its last part to a zoo
class or a plugin's class (``resolve.py``); if nothing matches it is unresolved.
"""

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .unpickler import Refused, is_reviewed

ROOTS = ("torch", "torchvision", "ultralytics", "timm", "einops", "efficientnet_pytorch", "numpy",
         "attn_deploy.models")
DATA_MODULES = ("builtins", "collections", "pathlib", "types", "argparse", "_codecs", "math")
# Of the roots, the modules a name may make the loader import: those that define model classes. Importing runs a
# module's top level, and elsewhere that can install or download (ultralytics.trackers calls check_requirements).
IMPORTABLE = ("torch", "torchvision", "ultralytics.nn", "ultralytics.utils", "timm", "einops", "efficientnet_pytorch",
              "numpy", "attn_deploy.models")
# The functions a checkpoint may hold as values (a module's forward may call them): pure tensor and number functions
# and model code, by the module that defines them. Nothing here reaches a file, the network, a process or a pickle.
FUNCTION_HOMES = ("torch.functional", "torch.nn.functional", "torch._C._nn", "math", "einops", "ultralytics.nn.modules",
                  "ultralytics.utils.tal", "timm.layers", "efficientnet_pytorch", "attn_deploy.models")

# Modules whose classes and functions load, download, compile or run things; never imported from a name.
DENIED_MODULES = (
    "torch.hub", "torch.jit", "torch.package", "torch.serialization", "torch.distributed", "torch.multiprocessing",
    "torch.utils.cpp_extension", "torch.utils.model_zoo", "torch.utils.data", "torch.utils.tensorboard",
    "torch.utils.bottleneck", "torch.utils.collect_env", "torch.utils.benchmark", "torch.fx", "torch._dynamo",
    "torch._inductor", "torch.export", "torch.compiler", "torch.onnx", "torch.cuda", "torch.backends",
    "torch.testing", "torch.nn.parallel", "torchvision.datasets", "torchvision.io", "torchvision.models._api",
    "ultralytics.hub", "ultralytics.engine", "ultralytics.data", "ultralytics.solutions", "ultralytics.cfg",
    "ultralytics.nn.autobackend", "ultralytics.utils.downloads", "ultralytics.utils.checks",
    "ultralytics.utils.callbacks", "ultralytics.utils.benchmarks", "ultralytics.utils.export",
    "ultralytics.utils.patches", "ultralytics.utils.dist", "ultralytics.utils.tuner", "ultralytics.utils.triton",
    "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.lib.format", "numpy.lib._datasource", "numpy.f2py",
    "numpy.distutils", "numpy.testing", "numpy.ctypeslib",
)
# A function or class whose dotted name contains one of these is refused: loaders, downloaders, and
# anything that opens files, runs commands or imports code, wherever it lives.
DENIED_WORDS = (
    "load", "fetch", "url", "http", "request", "hub", "save", "open", "exec", "eval", "compile", "system",
    "spawn", "popen", "subprocess", "install", "import", "require", "remove", "unlink", "rmtree", "delete",
    "write", "pickle", "pretrained", "file", "shell", "command",
)


_MISSING = object()


def under(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def _denied_word(name: str) -> str | None:
    return next((w for w in DENIED_WORDS if w in name.lower()), None)


def is_missing(module: str, error: ModuleNotFoundError) -> bool:
    """True when the module itself (or a parent) does not exist, rather than something it imports."""
    return bool(error.name) and (module == error.name or module.startswith(error.name + "."))


_PIP = {"timm": "timm", "einops": "einops", "efficientnet_pytorch": "efficientnet_pytorch", "mmcv": "mmcv",
        "mmengine": "mmengine", "thop": "thop", "natten": "natten", "mamba_ssm": "mamba-ssm", "fvcore": "fvcore"}


def import_failure(error: BaseException) -> str:
    """What a failed import of the user's fork or plugin code needs, in words."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.partition(".")[0]
        how = f"pip install {_PIP[top]}" if top in _PIP else (
            "a package, or a compiled (CUDA) extension such as DCNv3/DCNv4 that the fork builds from its sources")
        return f"it needs {error.name}, which is not installed here ({how})"
    return f"{type(error).__name__}: {error}"


@dataclass
class Name:
    """One global the checkpoint names, and what it comes to."""

    full: str
    status: str  # allowed, resolved, unresolved, refused, broken (its module failed to import)
    obj: object = None
    why: str = ""
    module: str = ""


@dataclass
class Plan:
    """Every global of a checkpoint, sorted by what will happen to it."""

    names: list[Name] = field(default_factory=list)

    def having(self, status: str) -> list[Name]:
        return [n for n in self.names if n.status == status]


class Names:
    """Resolves the globals of one checkpoint (``find_class`` calls it); every answer is cached."""

    def __init__(self, plugin_modules: list[str], by_name: Callable[[str], object | None]):
        self.roots = ROOTS + tuple(plugin_modules)
        self.by_name = by_name
        self.seen: dict[tuple[str, str], Name] = {}

    def __call__(self, module: str, qualname: str) -> object:
        name = self.classify(module, qualname)
        if name.status not in ("allowed", "resolved"):
            raise Refused(name.full, name.why)
        return name.obj

    def plan(self, globals_: list[tuple[str, str]]) -> Plan:
        return Plan([self.classify(m, q) for m, q in globals_])

    def classify(self, module: str, qualname: str) -> Name:
        key = (module, qualname)
        if key not in self.seen:
            self.seen[key] = self._classify(module, qualname)
        return self.seen[key]

    def _classify(self, module: str, qualname: str) -> Name:
        full = f"{module}.{qualname}"
        if not all(p.isidentifier() for p in (*module.split("."), *qualname.split("."))):
            return Name(repr(full), "refused", why="is not a dotted name of identifiers")
        if not under(module, self.roots + DATA_MODULES):
            return self._resolved(full) or Name(full, "refused", why=(
                f"lies outside the packages a checkpoint may name ({', '.join(self.roots)}); it was not imported"))
        if any(p.startswith("__") for p in (*module.split("."), *qualname.split("."))):
            return Name(full, "refused", why="is a dunder name (interpreter internals)")
        if under(module, DENIED_MODULES) or _denied_word(module):
            return Name(full, "refused", why=f"lies in {module}, a module that loads, fetches or runs things")
        if not under(module, IMPORTABLE + self.roots[len(ROOTS):] + DATA_MODULES) and module not in sys.modules:
            return self._resolved(full) or Name(full, "refused", why=(
                f"lies in {module}, which does not define model classes; it was not imported (importing runs its "
                "code)"))
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if is_missing(module, e):
                return self._resolved(full) or self._unresolved(full, module)
            return Name(full, "broken", why=import_failure(e), module=module)
        except Exception as e:
            return Name(full, "broken", why=import_failure(e), module=module)
        first, *rest = qualname.split(".")
        # The module's own namespace only: a module-level __getattr__ may import more (torch's lazy submodules).
        obj = vars(obj).get(first, _MISSING)
        for part in rest:
            if obj is _MISSING:
                break
            if not isinstance(obj, type):
                return Name(full, "refused", why="reaches through an object that is not a class")
            obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return self._resolved(full) or self._unresolved(full, module)
        return self._judge(full, module, obj)

    @staticmethod
    def _unresolved(full: str, module: str) -> Name:
        return Name(full, "unresolved", why="is not available here and matches no zoo module (see --fork, --plugin)",
                    module=module)

    def _resolved(self, full: str) -> Name | None:
        target = self.by_name(full)
        return None if target is None else Name(full, "resolved", target)

    def _judge(self, full: str, module: str, obj: object) -> Name:
        if is_reviewed(obj):
            return Name(full, "allowed", obj)
        if inspect.isroutine(obj) and not isinstance(obj, np.ufunc):
            return self._function(full, obj)
        if not under(module, self.roots):
            return Name(full, "refused", why=f"is not among the names of {module} the unpickler rebuilds")
        home = getattr(obj, "__module__", None)
        home = home if isinstance(home, str) else module
        if not under(home, self.roots):
            return Name(full, "refused", why=f"is defined in {home}, outside the packages a checkpoint may name")
        word = _denied_word(full) or _denied_word(f"{home}.{getattr(obj, '__qualname__', '')}")
        if under(home, DENIED_MODULES) or word:
            return Name(full, "refused", why="loads, fetches, opens or runs things when used" + (
                f" (its name says '{word}')" if word else ""))
        if isinstance(obj, type):
            base = next((c for c in obj.__mro__ if under(c.__module__, DENIED_MODULES)), None)
            if base is not None:
                return Name(full, "refused", why=f"is a kind of {base.__module__}.{base.__qualname__}, a wrapper "
                            "that loads or fetches models when used")
            return Name(full, "allowed", obj)
        if isinstance(obj, (np.ufunc, torch.dtype, torch.layout, torch.memory_format)):
            return Name(full, "allowed", obj)
        return Name(full, "refused", why="is neither a class, a function nor a dtype")

    def _function(self, full: str, obj: object) -> Name:
        """A function the file holds as a value: only the reviewed pure ones, since the tool may call what it holds."""
        home = getattr(obj, "__module__", None) or ""
        word = _denied_word(full) or _denied_word(f"{home}.{getattr(obj, '__qualname__', '')}")
        pure = home == "torch" or under(home, FUNCTION_HOMES + self.roots[len(ROOTS):]) or self._is_fork(home)
        if pure and not word:
            return Name(full, "allowed", obj)
        return Name(full, "refused", why=f"is a function of {home or 'unknown origin'}; a checkpoint may hold only "
                    "reviewed pure functions (torch tensor ops, torch.nn.functional, einops, math, model code)")

    @staticmethod
    def _is_fork(home: str) -> bool:
        """A module under ``ultralytics.`` that the user's --fork tree provides (their own code, run as theirs)."""
        import ultralytics

        origin = getattr(getattr(sys.modules.get(home), "__spec__", None), "origin", None)
        stock = Path(ultralytics.__file__).parent
        return under(home, ("ultralytics",)) and bool(origin) and not Path(origin).resolve().is_relative_to(stock)
