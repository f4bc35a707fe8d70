"""PyTorch: the reference runner. Parity compares every export against the model as loaded.

``semantics="true-shift"`` runs in-place overlapping slice assignments as the paper defines them
(see ``rewrite.shifts``): the reference where eager PyTorch computes something else.
"""

import contextlib
import copy

import numpy as np
import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


class Runner:
    """Runs a loaded detector eagerly on CPU; its first output is the detections tensor."""

    backend = "torch"
    device = "cpu"

    def __init__(self, model: nn.Module, precision: str = "fp32", semantics: str = "eager"):
        self.precision, self.semantics = precision, semantics
        dtype = DTYPES[precision]
        self.model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        self.dtype = dtype
        self.version = torch.__version__

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad(), run_as(self.semantics):
            out = self.model(torch.from_numpy(inputs[0]).to(self.dtype))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return [out.numpy()]

    def close(self) -> None:
        self.model = None


def run_as(semantics: str):
    """The context a model runs in for ``semantics``: true shifts, or eager PyTorch as it is."""
    from ..rewrite import TrueShifts

    return TrueShifts() if semantics == "true-shift" else contextlib.nullcontext()


def module_outputs(model: nn.Module, x: np.ndarray, paths: list[str],
                   semantics: str = "eager") -> dict[str, np.ndarray]:
    """The output (first tensor) of each module in ``paths``, in the order the modules finish computing."""
    outputs, hooks = {}, []
    modules = dict(model.named_modules())

    def keep(path: str):
        def hook(module, args, output) -> None:
            first = output[0] if isinstance(output, (tuple, list)) else output
            outputs.setdefault(path, first.detach().float().numpy())

        return hook

    for path in paths:
        hooks.append(modules[path].register_forward_hook(keep(path)))
    try:
        with torch.no_grad(), run_as(semantics):
            model(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    return outputs
