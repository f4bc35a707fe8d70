"""Backends: each file exports an artefact and runs it through the same ``Runner`` interface."""

import ast
import contextlib
import io
import logging
from collections.abc import Callable
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


@dataclass(frozen=True)
class Backend:
    """How one backend's artefact is recognised, opened and read; ``open(path, threads, ov_device, ov_precision)``."""

    name: str
    recognises: Callable[[Path], bool]
    open: Callable[..., object]
    metadata: Callable[[Path], dict]
    kind: str  # what the user passes, in words, for the error naming every accepted type


def _onnx_runner(path: Path, threads, ov_device, ov_precision):
    from . import onnx

    return onnx.Runner(path, threads=threads)


def _onnx_metadata(path: Path) -> dict:
    from .onnx import read_metadata

    return read_metadata(path)


def _openvino_runner(path: Path, threads, ov_device, ov_precision):
    from . import openvino

    return openvino.Runner(path, ov_device, ov_precision, threads)


def _sidecar_metadata(path: Path) -> dict:
    import yaml

    sidecar = (path if path.is_dir() else path.parent) / "metadata.yaml"
    return (yaml.safe_load(sidecar.read_text()) or {}) if sidecar.exists() else {}


def _trt_runner(path: Path, threads, ov_device, ov_precision):
    from . import tensorrt

    return tensorrt.Runner(path)


def _trt_metadata(path: Path) -> dict:
    from . import tensorrt

    return tensorrt.read_header(path)[1]


def _ncnn_runner(path: Path, threads, ov_device, ov_precision):
    from . import ncnn

    return ncnn.Runner(path, threads=threads)


def _ncnn_recognises(path: Path) -> bool:
    return path.suffix == ".param" or (path.is_dir() and any(path.glob("*.param")))


def _rknn_runner(path: Path, threads, ov_device, ov_precision):
    from . import rknn

    return rknn.open_runner(path)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("onnx", lambda p: p.suffix == ".onnx", _onnx_runner, _onnx_metadata, "a .onnx file"),
    Backend("openvino", lambda p: p.suffix == ".xml" or (p.is_dir() and any(p.glob("*.xml"))), _openvino_runner,
            _sidecar_metadata, "an OpenVINO model directory or .xml"),
    Backend("trt", lambda p: p.suffix == ".engine", _trt_runner, _trt_metadata, "a TensorRT .engine"),
    Backend("ncnn", _ncnn_recognises, _ncnn_runner, _sidecar_metadata, "an ncnn model directory or .param"),
    Backend("rknn", lambda p: p.is_dir() and any(p.glob("*.rknn")), _rknn_runner, _sidecar_metadata,
            "an RKNN model directory"),
)}


def backend_of(path: Path) -> str:
    """The name of the backend whose artefact ``path`` is (a key of ``BACKENDS``), from its file type."""
    if not path.exists():
        raise AttnDeployError(f"{path} does not exist")
    found = next((b.name for b in BACKENDS.values() if b.recognises(path)), None)
    if found is None:
        kinds = ", ".join(b.kind for b in BACKENDS.values())
        raise AttnDeployError(f"{path}: unsupported model type {path.suffix or '(directory)'}; expected {kinds}")
    return found


# The runtimes that run an ONNX file: onnxruntime (its own backend), and OpenCV's DNN module when asked for.
ONNX_RUNTIMES = ("onnxruntime", "opencv")


def open_runner(path: Path, threads: int | None = None, ov_device: str = "CPU", ov_precision: str | None = "fp32",
                runtime: str = "onnxruntime"):
    """The runner for an exported artefact, chosen by its file type; a ``.onnx`` file runs in ``runtime`` (one of
    ``ONNX_RUNTIMES``).

    ``ov_precision`` is OpenVINO's inference precision: "fp32" sets the f32 hint, None keeps the device default.
    """
    path = Path(path)
    if runtime == "opencv" and backend_of(path) == "onnx":
        from . import opencv

        return opencv.Runner(path, threads=threads)
    return BACKENDS[backend_of(path)].open(path, threads, ov_device, ov_precision)


def artefact_metadata(path: Path) -> dict:
    """The ultralytics metadata an artefact carries, read without loading it into its runtime."""
    path = Path(path)
    return BACKENDS[backend_of(path)].metadata(path)


def probe_source(path: Path) -> Path:
    """The ONNX file an artefact was built from: itself, or the same-stem ``.onnx`` beside it (``.fp16.onnx``
    for a TensorRT 11 fp16 engine, which is built from the mixed-precision file)."""
    if path.suffix == ".onnx":
        return path
    stem = path.name.removesuffix("_openvino_model").removesuffix("_ncnn_model").removesuffix("_rknn_model") if \
        path.is_dir() else path.stem
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
    if backend == "ncnn":
        from . import ncnn

        half = ncnn.NcnnOptions(half=bool(ncnn.read_metadata(path).get("args", {}).get("half")))
        return ncnn.Runner(ncnn.export(probe_onnx, workdir / "probe_ncnn_model", half).path)
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
