"""``--fork`` and ``--plugin``: the user's own code, imported as it is written.

A fork keeps its classes in packages stock ultralytics lacks (``ultralytics/nn/extra_modules/``,
``ultralytics/nn/backbone/``) and imports siblings relatively (``from ..modules.conv import Conv``).
While a checkpoint loads, every module under ``ultralytics.`` that stock ultralytics lacks is found
in the fork instead: a folder becomes a bare package whose ``__init__.py`` is not run (forks import
everything there, CUDA extensions included), a file is imported as that module. So only the modules
the checkpoint's globals name, and what those import, run; stock modules stay stock. The mount is
removed when loading ends (the loaded classes keep working), so that another fork can be loaded next.
"""

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def mounted(trees: list[Path]) -> Iterator[None]:
    """Fork folders importable under ``ultralytics.`` while the block runs."""
    if not trees:
        yield
        return
    finder = _ForkFinder(trees)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n, m in list(sys.modules.items()) if _from_fork(m, trees)]:
            _unmount(name)


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
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
