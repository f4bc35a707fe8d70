"""Whether a module has a zoo class's structure: the same state-dict keys and shapes.

A fork may rename a zoo class, or re-implement its forward under the published parameter names;
both fit. The checkpoint loader uses this to accept a class resolved by name, and the rewrite
engine to recognise a copy that is not an instance of the zoo class.
"""

from torch import nn


def _signature(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def fit_problem(module: nn.Module, cls: type[nn.Module]) -> str | None:
    """Why ``module`` does not fit ``cls`` rebuilt from its own configuration, or None when it fits."""
    try:
        fresh = cls(**cls.config_from(module))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    saved, expected = _signature(module), _signature(fresh)
    if saved != expected:
        differing = sorted(set(saved.items()) ^ set(expected.items()))[:4]
        return f"state differs: {differing}"
    return None


def fits(module: nn.Module, cls: type[nn.Module]) -> bool:
    """True for instances of ``cls`` and for modules with its structure under another class."""
    return isinstance(module, cls) or (hasattr(cls, "config_from") and fit_problem(module, cls) is None)
