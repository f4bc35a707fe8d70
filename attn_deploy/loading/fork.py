"""``--fork`` and ``--plugin``: the user's own code, imported as it is written.

A fork keeps its classes in packages stock ultralytics lacks (``ultralytics/nn/extra_modules/``,
``ultralytics/nn/backbone/``) and imports siblings relatively (``from ..modules.conv import Conv``).
While a checkpoint loads, every module under ``ultralytics.`` that stock ultralytics lacks is found
in the fork instead: a folder becomes a bare package whose ``__init__.py`` is not run (forks import
everything there, CUDA extensions included), a file is imported as that module. So only the modules
the checkpoint's globals name, and what those import, run; stock modules stay stock. The mount is
removed when loading ends (the loaded classes keep working), so that another fork can be loaded next.

Forks also append classes to stock files (``nn/modules/block.py``), and some move their classes after
training. A pickled class that stock lacks is then looked up in the mounted trees (``find_class``): first
in the fork's copy of the pickled module, imported beside stock's under a name of its own (stock classes
stay stock), then by its class name in any file of the tree (a ``class Name`` line, read as text before
anything is imported). Fork code written for timm 0.x imports ``timm.models.layers.<module>``, which
timm 1.x moved to ``timm.layers``: while a fork is mounted, those names import the moved modules.
"""

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import AttnDeployError
from .names import import_failure


def fork_package(path: Path) -> Path:
    """The fork's ``ultralytics/`` folder, given the fork's repository root or that folder itself."""
    path = Path(path)
    for candidate in (path / "ultralytics", path):
        if candidate.name == "ultralytics" and (candidate / "nn").is_dir():
            return candidate.resolve()
    raise AttnDeployError(f"--fork {path}: neither it nor {path / 'ultralytics'} is an ultralytics source folder "
                          "(one holding nn/)")


def _tree_of(plugin: Path) -> Path | None:
    """The ``ultralytics/`` folder of the fork that ``plugin`` lies in, if it lies in one."""
    return next((p for p in Path(plugin).resolve().parents if p.name == "ultralytics" and (p / "nn").is_dir()), None)


def fork_trees(fork: Path | None, plugins: list[Path]) -> list[Path]:
    """The fork folders to mount: ``--fork``'s, and those that plugins lie in."""
    trees = [fork_package(fork)] if fork is not None else []
    return list(dict.fromkeys(trees + [t for t in map(_tree_of, plugins) if t is not None]))


def _stock() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent


class _BarePackage(importlib.abc.Loader):
    """Loads a fork folder as a package without running its ``__init__.py``."""

    def create_module(self, spec):
        return None

    def exec_module(self, module: ModuleType) -> None:
        pass


class _ForkFinder(importlib.abc.MetaPathFinder):
    """Finds the modules under ``ultralytics.`` that stock ultralytics lacks in the fork folders."""

    def __init__(self, trees: list[Path]):
        self.trees, self.stock = trees, _stock()

    def find_spec(self, fullname: str, path=None, target=None):
        top, _, rest = fullname.partition(".")
        if top != "ultralytics" or not rest:
            return None
        parts = rest.split(".")
        if _has(self.stock, parts):
            return None
        for tree in self.trees:
            where = tree.joinpath(*parts)
            if where.is_dir():
                spec = importlib.machinery.ModuleSpec(fullname, _BarePackage(), is_package=True)
                spec.submodule_search_locations = [str(where)]
                return spec
            if where.with_suffix(".py").is_file():
                return importlib.util.spec_from_file_location(fullname, where.with_suffix(".py"))
        return None


def _has(root: Path, parts: list[str]) -> bool:
    where = root.joinpath(*parts)
    return where.is_dir() or where.with_suffix(".py").is_file()


def _from_fork(module: ModuleType, trees: list[Path]) -> bool:
    spec = getattr(module, "__spec__", None)
    if isinstance(getattr(spec, "loader", None), _BarePackage):
        return True
    origin = getattr(spec, "origin", None)
    return bool(origin) and any(Path(origin).is_relative_to(t) for t in trees)


def _unmount(name: str) -> None:
    module = sys.modules.pop(name)
    parent, _, child = name.rpartition(".")
    if getattr(sys.modules.get(parent), child, None) is module:
        delattr(sys.modules[parent], child)


class _Alias(importlib.abc.Loader):
    """Imports a module under the name an older release of its package gave it."""

    def __init__(self, moved_to: str):
        self.moved_to = moved_to

    def create_module(self, spec):
        return importlib.import_module(self.moved_to)

    def exec_module(self, module: ModuleType) -> None:
        pass


TIMM_MOVED = (("timm.models.layers.", "timm.layers."), ("timm.models.", "timm.models._"))  # timm 0.x -> 1.x


class _TimmFinder(importlib.abc.MetaPathFinder):
    """timm 0.x module paths that timm 1.x moved, imported from where they are now. Asked last, so only for names
    that no other finder has."""

    def find_spec(self, fullname: str, path=None, target=None):
        for old, new in TIMM_MOVED:
            rest = fullname.removeprefix(old)
            if rest != fullname and rest.isidentifier() and not rest.startswith("_"):
                moved_to = new + rest
                if importlib.util.find_spec(moved_to) is not None:
                    return importlib.machinery.ModuleSpec(fullname, _Alias(moved_to))
        return None


_MOUNTED: list[dict[Path, dict[str, list[Path]]]] = []  # per open mount, innermost last: tree -> class -> files


@contextlib.contextmanager
def mounted(trees: list[Path]) -> Iterator[None]:
    """Fork folders importable under ``ultralytics.`` while the block runs."""
    if not trees:
        yield
        return
    finders = [_ForkFinder(trees), _TimmFinder()]
    sys.meta_path.insert(0, finders[0])
    sys.meta_path.append(finders[1])
    _MOUNTED.append(dict.fromkeys(trees))
    try:
        yield
    finally:
        _MOUNTED.pop()
        for finder in finders:
            sys.meta_path.remove(finder)
        for name in [n for n, m in list(sys.modules.items()) if _from_fork(m, trees) or _aliased(m)]:
            _unmount(name)


def _aliased(module: ModuleType) -> bool:
    return isinstance(getattr(getattr(module, "__spec__", None), "loader", None), _Alias)


@dataclass
class Found:
    """A pickled class that stock lacks, found in a mounted fork tree."""

    obj: type
    file: Path
    by_class_name: bool  # found by its name in another file: the pickled module path exists in no file of the tree

    def note(self, full: str) -> str:
        if self.by_class_name:
            return (f"{full} was found by class name in the fork's {self.file}: its pickled module path exists in no "
                    "file of the tree (the fork moved its classes after training)")
        return f"{full} was found in the fork's copy of a stock file, {self.file}, which adds it"


def find_class(full: str) -> Found | None:
    """``full`` (a pickled ``module.Class``) in the trees mounted now: in the fork's copy of its module, else by
    its class name in any file of the tree. A file found is imported as the fork's (``import_plugin``)."""
    module, _, name = full.rpartition(".")
    parts = module.split(".")
    for tree in (_MOUNTED[-1] if _MOUNTED else {}):
        same_path = tree.joinpath(*parts[1:]).with_suffix(".py") if parts[0] == "ultralytics" else None
        candidates = [same_path] if same_path and same_path.is_file() else []
        candidates += [f for f in _classes_in(tree).get(name, []) if f != same_path]
        for file in candidates:
            obj = vars(import_plugin(file)).get(name)
            if isinstance(obj, type):
                return Found(obj, file, by_class_name=file != same_path)
    return None


def _classes_in(tree: Path) -> dict[str, list[Path]]:
    """The files of ``tree`` by the top-level classes they define (``class Name`` lines, read as text)."""
    index = _MOUNTED[-1]
    if index[tree] is None:
        index[tree] = {}
        for file in sorted(tree.rglob("*.py")):
            for name in re.findall(r"^class (\w+)", file.read_text(errors="replace"), re.MULTILINE):
                index[tree].setdefault(name, []).append(file)
    return index[tree]


def _module_name(path: Path, tree: Path) -> str:
    return ".".join(("ultralytics", *path.resolve().relative_to(tree).with_suffix("").parts))


def import_plugin(path: Path) -> ModuleType:
    """Import a user's file of module definitions. A file inside a fork's ``ultralytics/`` folder is imported as
    that package's module (the fork must be mounted), so its relative imports resolve as they do in the fork."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise AttnDeployError(f"plugin {path} is not a Python file")
    tree = _tree_of(path)
    try:
        if tree is None:
            return _import_file(path, f"attn_deploy_plugin_{path.stem}")
        name = _module_name(path, tree)
        if not _has(_stock(), name.split(".")[1:]):
            return importlib.import_module(name)
        # A fork's own copy of a stock module: imported beside it, in the same package, under a name of its own.
        package, _, stem = name.rpartition(".")
        return _import_file(path, f"{package}.attn_deploy_plugin_{stem}")
    except Exception as e:
        raise AttnDeployError(f"plugin {path} failed to import: {import_failure(e)}") from None


def _import_file(path: Path, name: str) -> ModuleType:
    if getattr(sys.modules.get(name), "__file__", None) == str(path):
        return sys.modules[name]  # imported once per load, so that its classes are the same objects throughout
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
