"""Makes zoo modules usable by name in ultralytics model YAMLs.

ultralytics' ``parse_model`` passes the input channels only to the layers it knows. Rather than
patch its source, each zoo layer is parsed as ``nn.BatchNorm2d`` (which ``parse_model`` builds
with the input channels and which keeps the channel count), then swapped for the zoo module built
with those channels, as the built-in modules are.
"""

import copy
import functools

from torch import nn


def _zoo_classes() -> dict[str, type[nn.Module]]:
    from . import ZOO

    return {entry.module.__name__: entry.module for entry in ZOO.values()}


def _zoo_layer(placeholder: nn.BatchNorm2d, cls: type[nn.Module], repeats: int, args: list) -> nn.Module:
    c1 = placeholder.num_features
    layer = nn.Sequential(*(cls(c1, *args) for _ in range(repeats))) if repeats > 1 else cls(c1, *args)
    layer.i, layer.f, layer.type = placeholder.i, placeholder.f, f"{cls.__module__}.{cls.__name__}"
    layer.np = sum(p.numel() for p in layer.parameters())
    return layer


def _with_zoo(parse_model):
    @functools.wraps(parse_model)
    def parse(d: dict, ch, verbose: bool = True):
        d, zoo, swaps = copy.deepcopy(d), _zoo_classes(), {}
        for i, row in enumerate(d["backbone"] + d["head"]):
            f, n, name, args = row
            if name not in zoo:
                continue
            if f != -1:
                raise ValueError(f"layer {i}: zoo module {name} must take its input from the previous layer (from: -1)")
            swaps[i] = (zoo[name], n, args)
            row[1:] = [1, "nn.BatchNorm2d", []]
        model, save = parse_model(d, ch, verbose)
        for i, (cls, n, args) in swaps.items():
            model[i] = _zoo_layer(model[i], cls, n, args)
        return model, save

    parse.attn_deploy_zoo = True
    return parse


def register() -> None:
    """Let ultralytics model YAMLs name every zoo module (idempotent)."""
    from ultralytics.nn import tasks

    if not getattr(tasks.parse_model, "attn_deploy_zoo", False):
        tasks.parse_model = _with_zoo(tasks.parse_model)
