"""Resolution by name: a class pickled under a path that does not exist here, matched by its name.

A plugin's class of that name is used as it is (it is the user's own code), then a class the mounted
fork defines in its copy of a stock file or under another path (``fork.find_class``). A zoo class stands in
for the fork's: the unpickler first creates a ``Pickled`` holder with the saved state, and
``rebuild`` then replaces it with a fresh zoo module built from ``config_from`` and loaded with the
saved parameters, so nothing of the fork object (its attribute names, its ``__dict__``) is adopted.
The reference is then the zoo's published form of the module, and the reports say so.
"""

from types import ModuleType

from torch import nn

from ..errors import AttnDeployError
from ..models import PUBLISHED_NAMES
from ..models.structure import fit_problem
from .fork import find_class
from .unpickler import ULTRALYTICS_ATTRIBUTES


class Pickled(nn.Module):
    """The saved state of a module pickled under a name resolved to a zoo class, until ``rebuild`` replaces it."""

    pickled_as = ""
    zoo: type[nn.Module] = nn.Module


def _qualified(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _is_zoo_class(obj: object) -> bool:
    return isinstance(obj, type) and obj.__module__.startswith("attn_deploy.models")


class ByName:
    """Finds the zoo or plugin object a missing pickled name stands for, and remembers what it resolved."""

    def __init__(self, plugins: list[ModuleType]):
        self.plugins = {k: v for plugin in plugins for k, v in vars(plugin).items()
                        if getattr(v, "__module__", None) == plugin.__name__}
        self.resolved: dict[str, object] = {}
        self.in_fork: dict[str, str] = {}  # pickled name -> how the mounted fork supplied it
        self._holders: dict[str, type[Pickled]] = {}

    def __call__(self, full: str) -> object | None:
        name = full.rpartition(".")[2]
        target = self.plugins.get(name)
        if target is None and (found := find_class(full)) is not None:
            target, self.in_fork[full] = found.obj, found.note(full)
        target = target or PUBLISHED_NAMES.get(name)
        if target is None:
            return None
        self.resolved[full] = target
        if not _is_zoo_class(target):
            return target
        if full not in self._holders:
            self._holders[full] = type(target.__name__, (Pickled,), {"pickled_as": full, "zoo": target})
        return self._holders[full]

    def report(self) -> dict[str, str]:
        return {name: _qualified(target) for name, target in self.resolved.items()}

    def notes(self) -> list[str]:
        return list(self.in_fork.values()) + [f"{name} was rebuilt as the zoo's {_qualified(target)}: the reference for parity is the zoo's "
                "published form of it, not the fork's own code (--fork DIR checks against that)"
                for name, target in self.resolved.items() if _is_zoo_class(target)]


def _rebuilt(held: Pickled, where: str) -> nn.Module:
    zoo = held.zoo
    said = f"{held.pickled_as} at {where or 'the top'} was resolved by name to the zoo's {zoo.__name__}"
    if not hasattr(zoo, "config_from"):
        raise AttnDeployError(f"{said}, which the zoo rebuilds only inside its parent module. Supply the fork's "
                              "code with --fork DIR or --plugin FILE.py.")
    problem = fit_problem(held, zoo)
    if problem:
        raise AttnDeployError(f"{said}, but its saved parameters do not fit it ({problem}). Supply the fork's "
                              "code with --fork DIR or --plugin FILE.py.")
    module = zoo(**zoo.config_from(held))
    module.load_state_dict(held.state_dict())
    for attr in ULTRALYTICS_ATTRIBUTES:
        if attr in vars(held):
            setattr(module, attr, vars(held)[attr])
    return module


def rebuild(model: nn.Module) -> nn.Module:
    """``model`` with every ``Pickled`` holder replaced by a fresh zoo module (shared holders stay shared)."""
    fresh: dict[int, nn.Module] = {}

    def swap(held: Pickled, where: str) -> nn.Module:
        if id(held) not in fresh:
            fresh[id(held)] = _rebuilt(held, where)
        return fresh[id(held)]

    if isinstance(model, Pickled):
        return swap(model, "")
    seen: set[int] = set()
    stack = [("", model)]
    while stack:
        path, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        for name, child in module._modules.items():
            where = f"{path}.{name}" if path else name
            if isinstance(child, Pickled):
                module._modules[name] = swap(child, where)
            elif child is not None:
                stack.append((where, child))
    return model
