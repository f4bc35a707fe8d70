"""Backends: each file exports an artefact and runs it through the same ``Runner`` interface."""

import ast
import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AttnDeployError


@dataclass
class ExportResult:
    """An artefact written by a backend's ``export``, and what the user should know about it."""

    path: Path
    target: str
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def silenced():
    """Swallow what third-party quantizers print and log below errors: stdout belongs to the CLI's --json output,
    stderr to its progress (onnxruntime's quantizer logs advice on every call)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def backend_of(path: Path) -> str:
    """``onnx``, ``openvino``, ``trt`` or ``rknn``, from the artefact's file type."""
    if not path.exists():
        raise AttnDeployError(f"{path} does not exist")
    if path.is_dir() and any(path.glob("*.rknn")):
        return "rknn"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".xml" or (path.is_dir() and any(path.glob("*.xml"))):
        return "openvino"
    if path.suffix == ".engine":
        return "trt"
    raise AttnDeployError(f"{path}: unsupported model type {path.suffix or '(directory)'}; expected a .onnx file, "
                          "an OpenVINO model directory or .xml, a TensorRT .engine, or an RKNN model directory")


def open_runner(path: Path, threads: int | None = None, ov_device: str = "CPU", ov_precision: str | None = "fp32"):
    """The runner for an exported artefact, chosen by its file type.

    ``ov_precision`` is OpenVINO's inference precision: "fp32" sets the f32 hint, None keeps the device default.
    """
    path = Path(path)
    backend = backend_of(path)
    if backend == "onnx":
        from . import onnx

        return onnx.Runner(path, threads=threads)
    if backend == "openvino":
        from . import openvino

        return openvino.Runner(path, ov_device, ov_precision, threads)
    if backend == "rknn":
        from . import rknn

        return rknn.Runner(path)
    from . import tensorrt

    return tensorrt.Runner(path)


def artefact_metadata(path: Path) -> dict:
    """The ultralytics metadata an artefact carries, read without loading it into its runtime."""
    path = Path(path)
    backend = backend_of(path)
    if backend == "onnx":
        from .onnx import read_metadata

        return read_metadata(path)
    if backend in ("openvino", "rknn"):
        import yaml

        sidecar = (path if path.is_dir() else path.parent) / "metadata.yaml"
        return (yaml.safe_load(sidecar.read_text()) or {}) if sidecar.exists() else {}
    from . import tensorrt

    return tensorrt.read_header(path)[1]


def probe_source(path: Path) -> Path:
    """The ONNX file an artefact was built from: itself, or the same-stem ``.onnx`` beside it (``.fp16.onnx``
    for a TensorRT 11 fp16 engine, which is built from the mixed-precision file)."""
    if path.suffix == ".onnx":
        return path
    stem = path.name.removesuffix("_openvino_model").removesuffix("_rknn_model") if path.is_dir() else path.stem
    if path.suffix == ".engine":
        from . import tensorrt

        typed = tensorrt.strongly_typed() and tensorrt.engine_precision(tensorrt.read_header(path)[1]) == "fp16"
        stem += ".fp16" if typed else ""
    source = path.with_name(f"{stem}.onnx")
    if not source.exists():
        raise AttnDeployError(f"cannot localise {path}: the ONNX it was built from ({source.name}) is not beside it")
    return source


def probe_runner(path: Path, probe_onnx: Path, workdir: Path, ov_device: str, ov_precision: str | None):
    """A runner of the same backend and precision as ``path``, built from ``probe_onnx`` (extra outputs)."""
    backend = backend_of(path)
    if backend == "onnx":
        return open_runner(probe_onnx)
    if backend == "openvino":
        from . import openvino

        half = openvino.OpenVINOOptions(half=openvino.half_weights(path))
        built = openvino.export(probe_onnx, workdir / "probe_openvino_model", half)
        return open_runner(built.path, ov_device=ov_device, ov_precision=ov_precision)
    if backend == "rknn":
        from . import rknn

        return rknn.Runner(path, source=probe_onnx)
    from . import tensorrt

    header = tensorrt.read_header(path)[1]
    options = tensorrt.TensorRTOptions(precision=tensorrt.engine_precision(header))
    built = tensorrt.export(probe_onnx, workdir / "probe.engine", options, header)
    return tensorrt.Runner(built.path)


def input_geometry(runner) -> tuple[int, tuple[int, int]]:
    """Batch and (H, W) of a runner's input; symbolic axes fall back to the export metadata."""
    shape = runner.input_shape
    meta = runner.metadata
    batch = shape[0] if isinstance(shape[0], int) else int(meta.get("batch", 1))
    if all(isinstance(d, int) for d in shape[2:]):
        return batch, (shape[2], shape[3])
    h, w = ast.literal_eval(meta["imgsz"]) if "imgsz" in meta else (640, 640)
    return batch, (h, w)
