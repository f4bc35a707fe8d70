"""Verification of an exported artefact against the original model: the backend opens it, the comparator
(``parity``) judges it. The backends know nothing of comparison; the comparator knows nothing of backends."""

import tempfile
from pathlib import Path

import onnx as onnx_lib

from . import heads, parity
from .exporters import input_geometry, onnx, open_runner, probe_runner, probe_source
from .exporters import torch as torch_backend
from .models import ZOO


def verify_export(path: Path, loaded, tolerances: dict | None = None, threads: int | None = None,
                  semantics: str = "eager", detections=None, ov_device: str = "CPU", ov_precision: str | None = "fp32",
                  accuracy=None, runtime: str = "onnxruntime"):
    """Parity of the exported ``path`` against the original model, at the artefact's own input shape; a ``.onnx``
    file runs in ``runtime`` (onnxruntime, or opencv).

    ``semantics`` is the rewrite report's ``reference``: ``true-shift`` where eager PyTorch's in-place
    shifts cannot be trusted. ``tolerances`` maps precisions to tolerances (default ``parity.TOLERANCES``);
    the artefact's precision picks one. ``accuracy`` (an ``accuracy.AccuracyCheck``) adds its mAP.
    """
    candidate = open_runner(path, threads, ov_device, ov_precision, runtime)
    try:
        batch, imgsz = input_geometry(candidate)
        return verify_runner(candidate, loaded, imgsz, batch, tolerances, semantics, detections, accuracy)
    finally:
        candidate.close()


def verify_runner(candidate, loaded, imgsz: tuple[int, int], batch: int = 1, tolerances: dict | None = None,
                  semantics: str = "eager", detections=None, accuracy=None, references: tuple | None = None):
    """Parity (and with ``accuracy`` mAP) of an open runner against the original model, at ``imgsz`` and ``batch``;
    as ``verify_export``, for runners that no file opens (PyTorch eager, CUDA graphs). ``references``: the fp32 and
    fp64 runs of the original model, when the caller keeps them for several candidates."""
    inputs = parity.parity_inputs(imgsz, batch)
    reference, exact = references or reference_runners(loaded, semantics)
    tolerance = (tolerances or parity.TOLERANCES)[candidate.precision]
    report = parity.verify(reference, candidate, inputs, tolerance, exact=exact,
                           detections=detections or parity.Detections(), head=heads.of_model(loaded.model))
    report.accuracy = accuracy.compare(candidate, imgsz, batch) if accuracy else None
    return report


def reference_runners(loaded, semantics: str = "eager") -> tuple:
    """The original model in fp32 (the reference) and in fp64 (its own rounding noise)."""
    return (torch_backend.Runner(loaded.model, semantics=semantics),
            torch_backend.Runner(loaded.model, precision="fp64", semantics=semantics))


def localise_export(path: Path, loaded, input_name: str, tolerance, semantics: str = "eager",
                    ov_device: str = "CPU", ov_precision: str | None = "fp32"):
    """Expose every YOLO block's and attention module's output in ``path``'s graph; name the first that departs."""
    path = Path(path)
    source = onnx_lib.load(str(probe_source(path)))
    zoo_types = tuple({e.module for e in ZOO.values()})
    paths = [name for name, m in loaded.model.named_modules()
             if name.count(".") == 1 and name.startswith("model.") or isinstance(m, zoo_types)]
    tensors = onnx.module_outputs(source, paths)
    with tempfile.TemporaryDirectory() as tmp:
        probe, probed = Path(tmp) / "probe.onnx", onnx.with_outputs(source, list(tensors.values()))
        onnx_lib.save(probed, probe)
        runner = probe_runner(path, probe, Path(tmp), ov_device, ov_precision)
        batch, imgsz = input_geometry(runner)
        x = parity.parity_inputs(imgsz, batch)[input_name]
        outputs = dict(zip([o.name for o in probed.graph.output], runner.run([x])))
        runner.close()
    reference = torch_backend.module_outputs(loaded.model, x, paths, semantics)
    candidate = {p: outputs[t] for p, t in tensors.items() if t in outputs}
    return parity.localise(input_name, reference, candidate, tolerance)
