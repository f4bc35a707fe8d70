"""Backends: each file exports an artefact and runs it through the same ``Runner`` interface."""

import ast
from pathlib import Path

from ..errors import AttnDeployError


def open_runner(path: Path, threads: int | None = None):
    """The runner for an exported artefact, chosen by its file type."""
    path = Path(path)
    if not path.exists():
        raise AttnDeployError(f"{path} does not exist")
    if path.suffix == ".onnx":
        from . import onnx

        return onnx.Runner(path, threads=threads)
    raise AttnDeployError(f"{path}: unsupported model type {path.suffix or '(none)'}; expected a .onnx file")


def verify_export(path: Path, loaded, tolerance=None, threads: int | None = None, semantics: str = "eager"):
    """Parity of the exported ``path`` against the original model, at the artefact's own input shape.

    ``semantics`` is the rewrite report's ``reference``: ``true-shift`` where eager PyTorch's in-place
    shifts cannot be trusted.
    """
    from .. import parity
    from . import torch as torch_backend

    candidate = open_runner(path, threads=threads)
    batch, imgsz = input_geometry(candidate)
    inputs = parity.parity_inputs(imgsz, batch)
    reference = torch_backend.Runner(loaded.model, semantics=semantics)
    exact = torch_backend.Runner(loaded.model, precision="fp64", semantics=semantics)
    try:
        return parity.verify(reference, candidate, inputs, tolerance, exact=exact)
    finally:
        candidate.close()


def input_geometry(runner) -> tuple[int, tuple[int, int]]:
    """Batch and (H, W) of a runner's input; symbolic axes fall back to the export metadata."""
    shape = runner.input_shape
    meta = runner.metadata
    batch = shape[0] if isinstance(shape[0], int) else int(meta.get("batch", 1))
    if all(isinstance(d, int) for d in shape[2:]):
        return batch, (shape[2], shape[3])
    h, w = ast.literal_eval(meta["imgsz"]) if "imgsz" in meta else (640, 640)
    return batch, (h, w)
