"""The restricted unpickler: a checkpoint may name classes and functions, but call only reviewed data rebuilds.

Built on Python's pure-Python ``pickle._Unpickler``, with every opcode that calls something replaced:

- REDUCE calls only the functions in ``_reviewed_calls()`` (tensor, parameter and storage rebuilds,
  OrderedDict, set, torch.Size and device, bytes, paths, namespaces, numpy arrays, dtypes and scalars
  without object dtype), each after checking its arguments.
- NEWOBJ/NEWOBJ_EX create an object as ``cls.__new__(cls)`` with no arguments, and only for module
  classes whose ``__new__`` is object's and whose state setting is reviewed (``nn.Module.__setstate__``,
  torch.nn's own, a few others), or for the plain namespaces. BUILD then sets the state once, by the
  class's reviewed ``__setstate__``, after checking it (no hooks, no dunder keys, no key that would
  shadow a method, only modules in ``_modules``).
- INST, OBJ and the EXT opcodes (protocol 0/1 construction, copyreg extension codes) are refused;
  APPEND(S), SETITEM(S) and ADDITEMS work only on real lists, dicts and sets, so they call no method
  an object could bring along.

Which names may be looked up at all is the resolver's business (``names.py``); ``find_class``
only resolves.
"""

import _codecs
import _compat_pickle
import argparse
import builtins
import collections
import enum
import functools
import io
import math
import pathlib
import pickle
import pickletools
import types
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class Refused(Exception):
    """What the file asked for, and why it is not done."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name} {why}")
        self.name, self.why = name, why


Rule = Callable[["RestrictedUnpickler", object, tuple], object]

_PLAIN = (int, float, bool, str, bytes, type(None))
# What ultralytics' parse_model sets on every layer; "type" shadows nn.Module.type(), harmlessly.
ULTRALYTICS_ATTRIBUTES = ("i", "f", "type", "np")
_MAPPINGS = (dict, collections.OrderedDict)


MAX_KEY_PARTS = 10_000  # a tuple of tuples is hashed and compared part by part: a 192-byte DAG can hold 2**64


def _plain(value) -> bool:
    """A plain value or a tuple of them, with at most MAX_KEY_PARTS parts counted as hashing would visit them."""
    stack, parts = [value], 0
    while stack:
        item = stack.pop()
        parts += 1
        if parts > MAX_KEY_PARTS or (type(item) not in _PLAIN and type(item) is not tuple):
            return False
        if type(item) is tuple:
            stack.extend(item)
    return True


def _arity(name: str, args: tuple, least: int, most: int) -> tuple:
    if not least <= len(args) <= most:
        raise Refused(name, f"takes {least} to {most} arguments, the file gives {len(args)}")
    return args


def _ints(name: str, value) -> tuple[int, ...]:
    if type(value) not in (tuple, list, torch.Size) or not all(type(v) is int and v >= 0 for v in value):
        raise Refused(name, "is given a size that is not a tuple of non-negative ints")
    return tuple(value)


def _check(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise Refused(name, why)


def _no_hooks(name: str, hooks) -> None:
    _check(type(hooks) in _MAPPINGS and not hooks, name, "is given hooks, which would be called later")


def _tensor(unpickler: "RestrictedUnpickler", func, args: tuple):
    name = "torch._utils._rebuild_tensor_v2"
    storage, offset, size, stride, requires_grad, hooks, *metadata = _arity(name, args, 6, 7)
    _check(unpickler.owns_storage(storage), name, "is given a storage that was not read from the archive")
    size, stride = _ints(name, size), _ints(name, stride)
    _check(type(offset) is int and offset >= 0 and len(size) == len(stride) and type(requires_grad) is bool,
           name, "is given an offset, size, stride or requires_grad of the wrong type")
    _check(not metadata or metadata[0] is None or (type(metadata[0]) is dict and all(
        type(k) is str and type(v) is bool for k, v in metadata[0].items())), name, "is given odd tensor metadata")
    _no_hooks(name, hooks)
    # A view may not show more elements than its storage holds (a stride-0 view would make .float() allocate them).
    _check(math.prod(size) <= storage.size() - offset, name, "views more elements than its storage holds")
    return func(storage, offset, size, stride, requires_grad, collections.OrderedDict(), *metadata)


def _parameter(unpickler, func, args: tuple):
    name = "torch._utils._rebuild_parameter"
    data, requires_grad, hooks = _arity(name, args, 3, 3)
    _check(type(data) is torch.Tensor and type(requires_grad) is bool, name, "is given something that is not a tensor")
    _no_hooks(name, hooks)
    return func(data, requires_grad, collections.OrderedDict())


def _size(unpickler, func, args: tuple):
    (sizes,) = _arity("torch.Size", args, 1, 1)
    return torch.Size(_ints("torch.Size", sizes))


def _device(unpickler, func, args: tuple):
    _arity("torch.device", args, 1, 2)
    _check(type(args[0]) is str and all(type(a) is int for a in args[1:]), "torch.device", "is given odd arguments")
    return torch.device(*args)


def _empty(unpickler, func, args: tuple):
    _check(args == (), func.__qualname__, "may only be created empty (its items or attributes follow)")
    if func is collections.OrderedDict:
        mapping = func()
        unpickler.expect_state(mapping, _state_dict_metadata)
        return mapping
    namespace = func.__new__(func)
    unpickler.expect_state(namespace, _namespace_state)
    return namespace


def _set(unpickler, func, args: tuple):
    (items,) = _arity("set", args, 1, 1)
    _check(type(items) in (list, tuple), "set", "is given items that are not a list")
    return func(unpickler.checked_key(v, items) for v in items)


def _latin1(unpickler, func, args: tuple):
    _check(len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"), "_codecs.encode",
           "is called other than to rebuild bytes (text, 'latin1')")
    return args[0].encode("latin1")


def _path(unpickler, func, args: tuple):
    _check(all(type(a) is str for a in args), "pathlib path", "is given parts that are not strings")
    # A Windows path cannot be instantiated elsewhere; its pure form is the same data.
    pure = {pathlib.WindowsPath: pathlib.PureWindowsPath}.get(func, func)
    return pure(*args)


def _dtype(unpickler, func, args: tuple):
    spec, *flags = _arity("numpy.dtype", args, 1, 3)
    _check(type(spec) is str and all(type(f) is bool for f in flags), "numpy.dtype", "is given odd arguments")
    dtype = np.dtype(spec)
    _check(not dtype.hasobject, f"numpy.dtype({spec!r})", "is an object dtype: unpickling its elements can call "
           "anything")
    unpickler.expect_state(dtype, _dtype_state)
    return dtype


def _dtype_state(dtype: np.dtype, state) -> None:
    # Only the byte order may differ from the dtype's own state: odd flags or sizes would let numpy
    # read plain bytes as object pointers.
    own = dtype.__reduce__()[2]
    _check(type(state) is tuple and len(state) == len(own) and state[1] in ("<", ">", "|", "=")
           and state[2:] == own[2:], "numpy.dtype", "is given a state that differs from its own beyond byte order")
    dtype.__setstate__(state)


def _reconstruct(unpickler, func, args: tuple):
    name = "numpy ndarray"
    subtype, shape, typecode = _arity(name, args, 3, 3)
    _check(subtype is np.ndarray, name, "may only rebuild plain ndarrays, not subclasses")
    # numpy pickles an empty array and sets its data with BUILD: a larger shape here would allocate.
    _check(tuple(shape) == (0,) and type(typecode) is bytes, name, "is rebuilt other than as numpy pickles it")
    array = func(subtype, (0,), typecode)
    unpickler.expect_state(array, _array_state)
    return array


def _array_state(array: np.ndarray, state) -> None:
    name = "numpy ndarray"
    _check(type(state) is tuple and len(state) == 5, name, "is given a state of the wrong form")
    _, shape, dtype, fortran, raw = state
    _check(isinstance(dtype, np.dtype) and not dtype.hasobject, name, "has an object dtype: unpickling its elements "
           "can call anything")
    _check(type(raw) is bytes and type(fortran) is bool and len(raw) == math.prod(_ints(name, shape)) * dtype.itemsize,
           name, "is given data whose size does not match its shape")
    array.__setstate__(state)


def _scalar(unpickler, func, args: tuple):
    name = "numpy scalar"
    dtype, raw = _arity(name, args, 2, 2)
    _check(isinstance(dtype, np.dtype) and not dtype.hasobject and type(raw) is bytes and len(raw) == dtype.itemsize,
           name, "is given an object dtype or data of the wrong size")
    return func(dtype, raw)


def _state_dict_metadata(mapping: collections.OrderedDict, state) -> None:
    # A state_dict() carries the module versions as its _metadata attribute; nothing else may be set on a
    # mapping (an attribute named like a method, say keys, would be called in its place).
    _check(type(state) is dict and set(state) <= {"_metadata"}, "collections.OrderedDict", "is given attributes "
           "other than a state dict's _metadata")
    metadata = state.get("_metadata", {})
    _check(type(metadata) in _MAPPINGS and all(type(k) is str and type(v) in _MAPPINGS and all(
        type(a) is str and _plain(b) for a, b in v.items()) for k, v in metadata.items()),
        "collections.OrderedDict", "is given _metadata that is not a mapping of plain values")
    mapping.__dict__.update(state)


def _namespace_state(namespace, state) -> None:
    name = type(namespace).__qualname__
    _check(type(state) in _MAPPINGS and all(type(k) is str and not k.startswith("__") for k in state),
           name, "is given a state that is not a dict of plain attribute names")
    shadowing = sorted(k for k in state if _descriptor(type(namespace), k) is not None)
    _check(not shadowing, name, f"is given attributes {shadowing} that would replace its own methods of those names")
    namespace.__dict__.update(state)


# Methods that load, save, open or run things, even on a model class (load_state_dict, save, register_*_hook).
METHOD_WORDS = ("load", "save", "open", "write", "hook", "register", "apply", "exec", "compile", "import",
                "file", "url", "download", "export", "setattr", "delattr")


def _method_lookup(unpickler: "RestrictedUnpickler", func, args: tuple):
    """``getattr(cls_or_module, name)`` as pickle writes a method held as an attribute (``self.detect = Detect.forward``,
    ``self.forward = self.forward_split_cat``): rebuilt as the lookup of a plain function the class defines, never
    by running getattr (which would run properties and ``__getattr__``)."""
    name = "builtins.getattr"
    target, attribute = _arity(name, args, 2, 2)
    _check(type(attribute) is str and attribute.isidentifier() and not attribute.startswith("__")
           and not any(w in attribute.lower() for w in METHOD_WORDS), name,
           f"is asked for {attribute!r}, which is not a method name or names one that loads, saves or opens things")
    if target is torch._C._VariableFunctionsClass:  # how pickle writes torch.sigmoid, torch.cat, ...
        return _tensor_function(unpickler, attribute)
    cls = target if isinstance(target, type) else type(target)
    _check(unpickler.may_bind(target), name, f"is asked for {attribute!r} of {unpickler.name_of(target)}, which is "
           "neither a module class the file names nor a module it created")
    method = own_method(cls, attribute)
    _check(method is not None, name, f"is asked for {cls.__qualname__}.{attribute}, which is not a method its class "
           "defines")
    unpickler.functions[id(method)] = method
    return method if target is cls else types.MethodType(method, target)


def _tensor_function(unpickler: "RestrictedUnpickler", attribute: str):
    """``torch.<attribute>``, a tensor op, as the file may hold it (the names that read files are refused above)."""
    held = vars(torch._C._VariableFunctionsClass).get(attribute)
    _check(type(held) is staticmethod, "builtins.getattr", f"is asked for torch.{attribute}, which is not a tensor op")
    function = held.__func__
    unpickler.functions[id(function)] = function
    return function


def _enum_member(unpickler, func, args: tuple):
    """``SomeEnum(value)`` as pickle writes an enum member: rebuilt by looking the value up in the enum's own table."""
    (member_value,) = _arity(func.__qualname__, args, 1, 1)
    members = vars(func).get("_value2member_map_", {})  # read from the class itself: no descriptor runs
    member = members.get(member_value) if _plain(member_value) and type(members) is dict else None
    _check(member is not None, unpickler.name_of(func), f"has no member of value {member_value!r}")
    return member


class Dropped:
    """An object of a class that is never created while loading (a loss, a transform), kept as its name only: nothing
    of it runs, and what held it is left out of the model (see ``checkpoint.drop_inert``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _discard(dropped: Dropped, state) -> None:
    """The state of a dropped object: built by the unpickler under its rules like any other, then not kept."""


@functools.cache
def namespaces() -> tuple[type, ...]:
    """The plain namespaces checkpoints carry (train args): created empty, their attributes set from a dict."""
    from ultralytics.utils import IterableSimpleNamespace

    return types.SimpleNamespace, argparse.Namespace, IterableSimpleNamespace


_RECONSTRUCT, _SCALAR = np.ndarray.__reduce__(np.zeros(1))[0], np.float64(0).__reduce__()[0]


@functools.cache
def _reviewed_calls() -> dict[int, tuple[object, Rule]]:
    """Everything REDUCE may call, each with the check of its arguments (by id, with the object to compare)."""
    paths = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath)
    calls = {
        torch._utils._rebuild_tensor_v2: _tensor,
        torch._utils._rebuild_parameter: _parameter,
        torch.Size: _size,
        torch.device: _device,
        collections.OrderedDict: _empty,
        types.SimpleNamespace: _empty,
        namespaces()[2]: _empty,
        set: _set,
        frozenset: _set,
        _codecs.encode: _latin1,
        **{p: _path for p in paths},
        np.dtype: _dtype,
        _RECONSTRUCT: _reconstruct,
        _SCALAR: _scalar,
        builtins.getattr: _method_lookup,
    }
    return {id(func): (func, rule) for func, rule in calls.items()}


def _reviewed_rule(obj: object) -> Rule | None:
    func, rule = _reviewed_calls().get(id(obj), (None, None))
    return rule if func is obj else None


def is_reviewed(obj: object) -> bool:
    """True for what the unpickler itself knows how to rebuild: the reviewed calls and the namespaces."""
    return _reviewed_rule(obj) is not None or any(obj is n for n in namespaces())


@functools.cache
def _methods(cls: type) -> frozenset[str]:
    """The names an instance attribute would shadow: methods and properties of ``cls`` and its bases."""
    kinds = (types.FunctionType, property, staticmethod, classmethod)
    return frozenset(k for c in cls.__mro__ for k, v in vars(c).items() if isinstance(v, kinds))


MAX_RNN_LAYERS = 64


def _descriptor(cls: type, key: str) -> object:
    """What ``cls`` defines for ``key`` (the first class in its MRO that does), read without running it."""
    return next((vars(c)[key] for c in cls.__mro__ if key in vars(c)), None)


def own_method(cls: type, name: str) -> types.FunctionType | None:
    """The plain function ``cls`` (or a base) defines as ``name``, read without running any descriptor."""
    found = _descriptor(cls, name)
    return found if type(found) is types.FunctionType else None


def _is_own_bound_method(module: nn.Module, value) -> bool:
    """``self.forward = self.forward_split_cat``: a method of the module's own class, bound to the module itself."""
    return (type(value) is types.MethodType and value.__self__ is module
            and own_method(type(module), value.__func__.__name__) is value.__func__)


def _module_state(module: nn.Module, state) -> dict:
    """The state ``module``'s class may set, checked; keys that name a property come back to be set after it."""
    cls = type(module)
    name = f"{cls.__module__}.{cls.__qualname__}"
    _check(type(state) is dict, name, "is given a state that is not a dict")
    properties = {}
    for key, value in state.items():
        _check(type(key) is str and not key.startswith("__"), name, f"is given the attribute {key!r}"
               if type(key) is str else "is given an attribute whose name is not a string")
        if "hooks" in key:
            _check(type(value) in (*_MAPPINGS, set) and not value, name, f"carries {key}, which would be called later")
        if isinstance(_descriptor(cls, key), property):
            properties[key] = value
            continue
        _check(key not in _methods(cls) or key in ULTRALYTICS_ATTRIBUTES or _is_own_bound_method(module, value), name,
               f"is given an attribute {key!r} that would replace its method of that name")
    # Module.__call__ calls _compiled_call_impl when it is set: it stays the class's (None).
    _check(state.get("_compiled_call_impl") is None, name, "is given _compiled_call_impl, which every call would run")
    registered = set()
    for key, kinds in (("_modules", nn.Module), ("_parameters", torch.Tensor), ("_buffers", torch.Tensor)):
        held = state.get(key, {})
        _check(type(held) in _MAPPINGS and all(v is None or isinstance(v, kinds) for v in held.values()), name,
               f"is given {key} holding something other than {kinds.__name__}s")
        registered.update(held)
    if issubclass(cls, nn.RNNBase):
        # torch's RNN __setstate__ loops over num_layers: bounded, and it must match the weights it names.
        layers = state.get("num_layers")
        _check(type(layers) is int and 1 <= layers <= MAX_RNN_LAYERS, name,
               f"is given num_layers={layers!r}, beyond the {MAX_RNN_LAYERS} this loader rebuilds")
    shadowing = sorted(k for k in registered if k in state)
    _check(not shadowing, name, f"is given attributes {shadowing} that would hide its submodules, parameters or "
           "buffers of those names")
    return {k: state.pop(k) for k in list(properties)}


def _set_properties(module: nn.Module, properties: dict) -> None:
    """Older ultralytics kept plain attributes (``end2end``) that today's classes compute as properties: a plain value
    goes through the class's own setter, as its ``__init__`` would set it; a property without a setter ignores it."""
    cls = type(module)
    for key, value in properties.items():
        setter = _descriptor(cls, key).fset
        _check(_plain(value), f"{cls.__module__}.{cls.__qualname__}", f"is given {key!r}, a property of its class, "
               "as something other than a plain value")
        if setter is not None:
            setter(module, value)


def _einops_state(module: nn.Module, state) -> dict:
    # einops layers rebuild themselves from the pattern (a string parsed, nothing imported or read). Reduce's
    # reduction may be a callable in einops; here only a named one ("mean", "max", ...).
    _check(type(state) is dict and set(state) - {"reduction"} == {"pattern", "axes_lengths"}
           and type(state["pattern"]) is str and type(state.get("reduction", "")) is str
           and type(state["axes_lengths"]) is dict
           and all(type(k) is str and type(v) is int for k, v in state["axes_lengths"].items()),
           type(module).__qualname__, "is given a state other than a pattern, a named reduction and axis lengths")
    return {}


# State setters reviewed beyond nn.Module's own and torch.nn's (which fill defaults for attributes
# that later torch versions added, then call Module's).
_REVIEWED_SETSTATE = {
    "ultralytics.nn.modules.block.AAttn.__setstate__": _module_state,
    "einops.layers.RearrangeMixin.__setstate__": _einops_state,
    "einops.layers.ReduceMixin.__setstate__": _einops_state,
}


def rebuilds_itself(cls: type) -> bool:
    """Whether ``cls``'s reviewed state setter rebuilds the object from a checked description (einops layers): what
    else it holds, its own code made, not the file."""
    return state_rule(cls) is _einops_state


def state_rule(cls: type) -> Callable[[nn.Module, object], dict] | None:
    """How ``cls``'s saved state is checked before its own ``__setstate__`` sets it; None when it is not reviewed."""
    setstate = getattr(cls, "__setstate__", None)
    home = getattr(setstate, "__module__", "") or ""
    if setstate is nn.Module.__setstate__ or home.startswith("torch.nn.modules."):
        return _module_state
    return _REVIEWED_SETSTATE.get(f"{home}.{getattr(setstate, '__qualname__', '')}")


NOT_A_MODULE = "only torch modules and plain namespaces are created while loading"


def construction_problem(cls) -> str | None:
    """Why ``cls`` may not be created empty and given its saved state; None when it may."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return NOT_A_MODULE
    if cls.__new__ is not object.__new__:
        return "it has its own __new__"
    if state_rule(cls) is None:
        return "it sets its state with its own __setstate__, which is not reviewed"
    return None


def _compat(module: str, name: str, proto: int) -> tuple[str, str]:
    """Python 2 names (protocols 0-2) as Python 3 knows them, as pickle's own find_class maps them."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name
    return module, name


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def globals_in(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) the pickle looks up, read without running it (for messages before anything is loaded)."""
    found, recent, memo, proto = [], [], {}, 0
    for op, arg, _ in pickletools.genops(data):
        if op.name == "PROTO":
            proto = arg
        elif op.name in ("GLOBAL", "INST"):
            found.append(_compat(*arg.split(" ", 1), proto))
        elif op.name == "STACK_GLOBAL" and len(recent) >= 2 and all(type(s) is str for s in recent[-2:]):
            found.append(_compat(recent[-2], recent[-1], proto))
        elif op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            _check(op.name == "MEMOIZE" or 0 <= arg < MAX_MEMO_INDEX, "a memo index", "is out of range")
            memo[len(memo) if op.name == "MEMOIZE" else arg] = recent[-1] if recent else None
        if op.name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(arg))
        elif op.name in _STRINGS:
            recent.append(arg)
        elif op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME"):
            recent.append(None)
        del recent[:-2]
    return list(dict.fromkeys(found))


MAX_SAME_HASH = 64
MAX_MEMO_INDEX = 1 << 31

Resolve = Callable[[str, str], object]
Storage = Callable[[type, str, int], torch.storage.TypedStorage]


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles a torch checkpoint's data.pkl calling nothing but the reviewed rebuilds (see the module doc)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, resolve: Resolve, storage: Storage):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.resolve, self.read_storage = resolve, storage
        self.names: dict[int, str] = {}  # id of each object find_class returned -> the name the file used
        self.storages: dict[int, object] = {}
        self.awaiting_state: dict[int, tuple[object, Callable]] = {}  # objects BUILD may set, once each
        self.functions: dict[int, object] = {}  # the functions the file may hold: resolved, or its classes' methods
        self.created: dict[int, nn.Module] = {}  # the modules this unpickler created, which getattr may bind
        self.key_hashes: dict[tuple[int, int], int] = {}  # keys per (container, hash bucket): see checked_key

    # -- names and storages

    def find_class(self, module: str, name: str):
        module, name = _compat(module, name, self.proto)
        obj = self.resolve(module, name)
        self.names[id(obj)] = f"{module}.{name}"
        if callable(obj) and not isinstance(obj, type):
            self.functions[id(obj)] = obj
        return obj

    def name_of(self, obj: object) -> str:
        return self.names.get(id(obj)) or f"an object of type {type(obj).__qualname__}"

    def persistent_load(self, pid):
        ok = type(pid) is tuple and len(pid) == 5 and pid[0] in ("storage", b"storage")
        _check(ok, "a persistent id", "is not a torch storage reference")
        _, storage_type, key, location, numel = pid
        _check(storage_type is torch.UntypedStorage or (isinstance(storage_type, type) and issubclass(
            storage_type, torch.storage._LegacyStorage)), self.name_of(storage_type), "is not a storage type")
        _check(type(key) is str and type(location) is str and type(numel) is int and numel >= 0, f"storage {key!r}",
               "is referenced with an odd key, location or size")
        storage = self.read_storage(storage_type, key, numel)
        self.storages[id(storage)] = storage
        return storage

    def owns_storage(self, storage) -> bool:
        return self.storages.get(id(storage)) is storage

    def may_bind(self, target: object) -> bool:
        """Whether getattr may look a method up on ``target``: a module class the file named, or a module it created."""
        if isinstance(target, type):
            return id(target) in self.names and issubclass(target, nn.Module)
        return self.created.get(id(target)) is target

    def checked_key(self, key: object, owner: object) -> object:
        """``key`` once it is known that hashing it is cheap and that few keys of ``owner`` (the dict or set it goes
        into) share its hash, so that no dict takes quadratic time to build."""
        _check(_plain(key) or isinstance(key, (torch.dtype, torch.device)), "a dictionary or set key",
               f"is an object of type {type(key).__qualname__} or a tuple too large to hash quickly")
        # Buckets are ints below 2**61 - 1, which hash to themselves: this count itself cannot collide.
        bucket = (id(owner), hash(key) & ((1 << 60) - 1))
        self.key_hashes[bucket] = self.key_hashes.get(bucket, 0) + 1
        _check(self.key_hashes[bucket] <= MAX_SAME_HASH, "a dictionary or set",
               f"has over {MAX_SAME_HASH} keys with one hash, which would take quadratic time to build")
        return key

    def expect_state(self, obj: object, apply: Callable) -> None:
        self.awaiting_state[id(obj)] = (obj, apply)

    def load_put(self):
        index = int(self.readline()[:-1])
        _check(0 <= index < MAX_MEMO_INDEX, "a memo index", "is out of range")
        self.memo[index] = self.stack[-1]

    dispatch[pickle.PUT[0]] = load_put

    # -- the opcodes that call things

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        rule = _enum_member if isinstance(func, enum.EnumMeta) else _reviewed_rule(func)
        if rule is None:
            made = "constructed by calling it" if isinstance(func, type) else "called"
            raise Refused(self.name_of(func), f"was to be {made} with arguments from the file; a checkpoint may "
                          "call only reviewed data-rebuilding functions")
        _check(type(args) is tuple, self.name_of(func), "is called with arguments that are not a tuple")
        self.stack[-1] = rule(self, func, args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls, args, kwargs) -> object:
        name = self.name_of(cls)
        _check(args == () and kwargs == {}, name, "was to be constructed with arguments from the file")
        if any(cls is n for n in namespaces()):
            obj = cls.__new__(cls)
            self.expect_state(obj, _namespace_state)
            return obj
        problem = construction_problem(cls)
        if problem == NOT_A_MODULE:
            dropped = Dropped(name)
            self.expect_state(dropped, _discard)
            return dropped
        _check(problem is None, name, f"was to be constructed, but {problem}")
        obj = object.__new__(cls)
        rule = state_rule(cls)

        def set_state(module: nn.Module, state) -> None:
            properties = rule(module, state)
            cls.__setstate__(module, state)
            _set_properties(module, properties)

        self.expect_state(obj, set_state)
        self.created[id(obj)] = obj
        return obj

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self):
        state = self.stack.pop()
        obj = self.stack[-1]
        held, apply = self.awaiting_state.pop(id(obj), (None, None))
        _check(held is obj, self.names.get(id(type(obj))) or type(obj).__qualname__,
               "was to have its state set, which only reviewed objects, once each, may have")
        apply(obj, state)

    dispatch[pickle.BUILD[0]] = load_build

    def load_inst(self):
        module = self.readline()[:-1].decode("utf-8", "replace")
        name = self.readline()[:-1].decode("utf-8", "replace")
        raise Refused(f"{module}.{name}", "was to be constructed (INST); classes are only created empty")

    dispatch[pickle.INST[0]] = load_inst

    def load_obj(self):
        args = self.pop_mark()
        raise Refused(self.name_of(args[0]) if args else "OBJ", "was to be constructed (OBJ); classes are only "
                      "created empty")

    dispatch[pickle.OBJ[0]] = load_obj

    def load_ext(self):
        raise Refused("a copyreg extension code", "names an object torch never pickles that way")

    dispatch[pickle.EXT1[0]] = dispatch[pickle.EXT2[0]] = dispatch[pickle.EXT4[0]] = load_ext

    # -- container opcodes: only on real containers, so no method an object brings along is called

    def _container(self, kinds: tuple) -> object:
        target = self.stack[-1]
        _check(type(target) in kinds, f"an object of type {type(target).__qualname__}",
               "was to be filled by calling its own methods")
        return target

    def load_append(self):
        value = self.stack.pop()
        self._container((list,)).append(value)

    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        self._container((list,)).extend(items)

    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        target = self._container(_MAPPINGS)
        target[self.checked_key(key, target)] = value

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self._container(_MAPPINGS)
        for i in range(0, len(items), 2):
            target[self.checked_key(items[i], target)] = items[i + 1]

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self):
        items = self.pop_mark()
        self.append({self.checked_key(items[i], items): items[i + 1] for i in range(0, len(items), 2)})

    dispatch[pickle.DICT[0]] = load_dict

    def load_frozenset(self):
        items = self.pop_mark()
        self.append(frozenset(self.checked_key(i, items) for i in items))

    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_additems(self):
        items = self.pop_mark()
        target = self._container((set,))
        target.update(self.checked_key(i, target) for i in items)

    dispatch[pickle.ADDITEMS[0]] = load_additems


def unpickle(data: bytes, resolve: Resolve, storage: Storage) -> tuple[object, dict[int, object]]:
    """Unpickle ``data``; Refused when the file asks for anything beyond the reviewed rebuilds. With it, the
    functions the file may hold as values (by id), for ``values.check_values``."""
    unpickler = RestrictedUnpickler(data, resolve, storage)
    return unpickler.load(), unpickler.functions
