"""What a loaded checkpoint may hold, checked once over the whole unpickled object before the tool touches it.

The tool calls things on what it loads, and so does torch. Every such place, and why a value the file chose cannot
reach it (tests/test_hostile.py holds a hostile value for each):

- ``checkpoint._describe`` reads ``names``, ``stride``, ``task``, ``yaml`` and ``train_args``: each must be of
  the plain type it is read as (``plain_fields``), so no method of a file's object is called (``dict(names)``
  would call a ``keys`` attribute; ``train_args.get`` a ``get`` one).
- ``.float()`` and ``.eval()`` walk ``_modules`` and apply a function to ``_parameters`` and ``_buffers`` (tensors
  only, ``unpickler._module_state``); ultralytics' ``_apply`` also passes the head's ``stride``, ``anchors`` and
  ``strides`` to it, which calls their ``is_floating_point``: only real tensors and data live in a module's
  attributes (below), so those are tensors or plain values.
- every forward: ``Module.__call__`` runs ``_compiled_call_impl`` when set, then the hooks, then ``forward``. The
  first must be None, the hooks empty, and an attribute may not shadow a method (``forward``), a submodule, a
  parameter or a buffer (``unpickler._module_state``); a bound method of the module's own class is its own code.
  A forward may call an attribute it holds: a function held is one of the reviewed pure ones (``names``), or a
  method its class defines.
- export metadata and reports read the same described fields, never the file's objects.

Everything else in the file is data: plain values, tensors, numpy arrays, dtypes, devices, paths, enum members, and
lists, tuples, dicts, sets and namespaces of them (namespaces hold data only). Objects of classes that are never
created while loading (a loss, a transform) are ``Dropped``; a module attribute holding one is left out, and the
load report says so. The whole graph is bounded in size and depth, so no later walk over it (copying, hashing,
JSON) can run for ever or overflow the stack.
"""

import enum
import pathlib
import types
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from .unpickler import Dropped, Refused, namespaces, own_method, rebuilds_itself

MAX_VALUES = 5_000_000  # values a full walk of the checkpoint visits, shared ones counted at every path
MAX_DEPTH = 100  # containers within containers (a module counts as one); deep enough for any model, and recursion-safe

_LEAVES = (int, float, bool, complex, str, bytes, type(None), torch.Tensor, nn.Parameter, torch.Size, torch.device,
           torch.dtype, torch.layout, torch.memory_format, np.ndarray, np.dtype, Dropped)
_CONTAINERS = (list, tuple, dict, OrderedDict, set, frozenset)


def _children(node: object) -> Iterator[object]:
    if type(node) in (dict, OrderedDict):
        yield from node.keys()
        yield from node.values()
    elif type(node) in _CONTAINERS:
        yield from node
    elif isinstance(node, nn.Module) and rebuilds_itself(type(node)):
        yield from (vars(node)[k] for k in ("_modules", "_parameters", "_buffers") if k in vars(node))
    else:  # a module or a namespace: its attributes
        yield from vars(node).values()


def _is_registry(node: object) -> bool:
    return type(node) in (dict, OrderedDict) and bool(node) and all(
        isinstance(v, (nn.Module, torch.Tensor)) or v is None for v in node.values())


def _is_leaf(value: object, functions: dict[int, object], data_only: bool) -> bool:
    """A value that holds nothing further and that the tool may hold: data, or (outside namespaces) a function
    the resolver allowed or a method of a module's own class."""
    if type(value) in _LEAVES or isinstance(value, (np.generic, pathlib.PurePath, enum.Enum)):
        return True
    if data_only:
        return False
    if functions.get(id(value)) is value:
        return True
    return (type(value) is types.MethodType and isinstance(value.__self__, nn.Module)
            and own_method(type(value.__self__), value.__func__.__name__) is value.__func__)


def _describe(value: object) -> str:
    kind = "the class" if isinstance(value, type) else "an object of type"
    return f"{kind} {getattr(value, '__qualname__', None) if isinstance(value, type) else type(value).__qualname__}"


def check_values(root: object, functions: dict[int, object]) -> None:
    """Refuse (``Refused``) a checkpoint holding anything but data, reviewed functions and modules, or a graph larger
    or deeper than any walk over it can afford. ``functions``: the routines the resolver allowed, by id."""
    held = namespaces()
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values below, counted at every path; depth)
    active: set[int] = set()
    stack: list[tuple[object, bool, bool]] = [(root, False, False)]
    while stack:
        node, data_only, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            below = [sizes.get(id(c), (1, 1)) for c in _children(node)]
            # A module counts once: walks over modules (.float(), copies) visit each once (checkpoint._check_walkable).
            size = 1 if isinstance(node, nn.Module) else min(MAX_VALUES + 1, 1 + sum(s for s, _ in below))
            # A module's registries (_modules, _parameters, _buffers) are no level of their own.
            depth = max((d for _, d in below), default=0) + (0 if _is_registry(node) else 1)
            if size > MAX_VALUES or depth > MAX_DEPTH:
                raise Refused("the checkpoint", f"holds a structure of over {MAX_VALUES} values or {MAX_DEPTH} levels, "
                              "more than any model needs")
            sizes[key] = (size, depth)
            continue
        if key in sizes:
            continue
        if key in active:
            if isinstance(node, nn.Module):
                continue  # a module holding its parent: walks follow _modules only, which is checked for cycles
            raise Refused("the checkpoint", f"holds {_describe(node)} that contains itself")
        active.add(key)
        stack.append((node, data_only, True))
        inner = data_only or type(node) in held
        for child in _children(node):
            if type(child) in _CONTAINERS or type(child) in held or isinstance(child, nn.Module):
                if isinstance(child, nn.Module) and inner:
                    raise Refused("a namespace", "holds a module; namespaces hold data only")
                stack.append((child, inner, False))
            elif not _is_leaf(child, functions, inner):
                where = "a namespace" if inner else "the checkpoint"
                raise Refused(where, f"holds {_describe(child)}; a checkpoint holds only data, modules and "
                              "reviewed functions" + ("" if not inner else " (namespaces: data only)"))


def drop_inert(model: nn.Module) -> list[str]:
    """Remove every module attribute that holds a ``Dropped`` object (a loss, a transform); what was removed, in
    words. Export needs neither."""
    removed = []
    for path, module in model.named_modules(remove_duplicate=True):
        for key, value in list(vars(module).items()):
            dropped = {d.name for d in _dropped_in(value)}
            if dropped and not key.startswith("_"):
                delattr(module, key)
                names = ", ".join(sorted(dropped))
                removed.append(f"{f'{path}.' if path else 'model.'}{key} ({names}) was left out: export does not "
                               "need it, and its class is never created while loading")
    return removed


def _dropped_in(value: object) -> Iterator[Dropped]:
    stack, seen = [value], set()
    while stack:
        node = stack.pop()
        if type(node) is Dropped:
            yield node
        elif id(node) not in seen and (type(node) in _CONTAINERS or type(node) in namespaces()):
            seen.add(id(node))
            stack.extend(_children(node))
