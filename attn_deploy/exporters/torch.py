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


def inference_outputs(out) -> list[torch.Tensor]:
    """What an eval-mode model returns, as its export returns it: ultralytics' heads return ``(inference, raw
    predictions)`` outside export mode, and the inference part is one tensor or a tuple of them (segment: the
    boxes with mask coefficients, and the prototypes)."""
    first = out[0] if isinstance(out, (tuple, list)) else out
    return list(first) if isinstance(first, (tuple, list)) else [first]


class Runner:
    """Runs a loaded model eagerly on CPU and returns every output its export has."""

    backend = "torch"
    device = "cpu"
    mode = "eager"

    def __init__(self, model: nn.Module, precision: str = "fp32", semantics: str = "eager", threads: int | None = None):
        self.precision, self.semantics = precision, semantics
        dtype = DTYPES[precision]
        self.model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        self.dtype = dtype
        self.version = torch.__version__
        self.threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad(), run_as(self.semantics):
            out = self.model(torch.from_numpy(inputs[0]).to(self.dtype))
        return [t.numpy() for t in inference_outputs(out)]

    def close(self) -> None:
        self.model = None
        torch.set_num_threads(self.threads_before)


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
            outputs.setdefault(path, inference_outputs(output)[0].detach().float().numpy())

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


class CudaRunner:
    """Runs a detector on a CUDA device in fp32 or fp16, eagerly or replaying a captured CUDA graph.

    Inputs and outputs cross to and from the host on every run, as they do for TensorRT's runner.
    """

    backend = "torch"
    device = "cuda"

    def __init__(self, model: nn.Module, precision: str = "fp32", graphs: bool = False):
        from ..errors import AttnDeployError

        if not torch.cuda.is_available():
            raise AttnDeployError("--device cuda: torch sees no CUDA device here")
        self.precision, self.mode = precision, "cuda-graph" if graphs else "eager"
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
        self.model = copy.deepcopy(model).to("cuda", self.dtype).eval()
        self.graph = self.static_in = self.static_out = None
        self.version = torch.__version__

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return inference_outputs(self.model(x))

    def _capture(self, x: torch.Tensor) -> None:
        self.static_in = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up before capture, on a side stream as torch.cuda.graphs asks
            for _ in range(3):
                self._forward(self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self._forward(self.static_in)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = torch.from_numpy(inputs[0]).to("cuda", self.dtype)
        with torch.no_grad():
            if self.mode == "eager":
                return [t.float().cpu().numpy() for t in self._forward(x)]
            if self.static_in is None or self.static_in.shape != x.shape:
                self._capture(x)
            self.static_in.copy_(x)
            self.graph.replay()
            return [t.float().cpu().numpy() for t in self.static_out]

    def close(self) -> None:
        self.model = self.graph = self.static_in = self.static_out = None
