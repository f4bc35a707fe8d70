"""ncnn: convert an exported ONNX file with pnnx (ncnn's own converter) and run it in ncnn's Python runtime.

The ``pnnx`` wheel carries a converter binary that reads ONNX without torch; it is run as a process and
its warnings are kept. The model goes in ``<stem>_ncnn_model/`` as ``model.ncnn.param``,
``model.ncnn.bin`` and ultralytics' ``metadata.yaml``, so ``ultralytics.YOLO("<stem>_ncnn_model")``
loads it. pnnx converts some graphs that ncnn then refuses (a concat along the batch axis, which
ncnn's blobs do not have): the export loads what it wrote, and a refusal is an error naming the layer.

Weights are fp32 unless ``half``: then fp16 weights, and fp16 storage and arithmetic in the runner.
ncnn's own CPU options (``NcnnSettings``) are what ``bench`` varies: the packing layout (several
channels per SIMD lane) and fp16 or bf16 storage and arithmetic; parity runs at the precision the
export was made for. ncnn has no batch axis, so an ncnn model takes one image at a time. The ONNX
given to pnnx is written at opset 17 (``OPSET``), the last whose reductions take their axes as attributes.
"""

import contextlib
import importlib.util
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import AttnDeployError
from ..files import check_writable, model_file, write_dir_atomic
from . import ExportResult

EXTRA = 'pip install "attn-deploy[ncnn]"'
PARAM, BIN = "model.ncnn.param", "model.ncnn.bin"
# pnnx reads a Reduce op's axes only as an attribute (before opset 18): the ONNX it converts is written at 17
# unless the user pins another opset or a module needs a higher one (rewrite/graph/pnnx.py)
OPSET = 17


@dataclass
class NcnnOptions:
    half: bool = False  # fp16 weights, fp16 storage and arithmetic
    force: bool = False


@dataclass(frozen=True)
class NcnnSettings:
    """ncnn's CPU options: ``precision`` "fp32", "fp16" (fp16 storage and arithmetic) or "bf16" (bf16 storage);
    ``packing``: the packed layout that fills SIMD lanes with channels; ``winograd``: Winograd 3x3 convolutions
    (ncnn's default, and faster; their fp32 rounding is larger: on untrained seeded models fed noise it alone can
    exceed the fp32 tolerance, reports/ncnn)."""

    precision: str = "fp32"
    packing: bool = True
    winograd: bool = True


def missing() -> str | None:
    """Why ncnn cannot be used here, or None."""
    absent = [name for name in ("ncnn", "pnnx") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(absent)} not installed; install the extra: {EXTRA}" if absent else None


def require() -> None:
    reason = missing()
    if reason:
        raise AttnDeployError(f"--target ncnn needs ncnn's runtime and its converter pnnx: {reason}")


def model_dir(onnx_path: Path) -> Path:
    """Where ultralytics looks for an ncnn export of ``onnx_path``."""
    return onnx_path.with_name(f"{onnx_path.stem}_ncnn_model")


def _pnnx(source: Path, out: Path, half: bool) -> list[str]:
    """Run pnnx on a copy of ``source`` in ``out`` (pnnx writes ``<stem>.pnnxsim.onnx`` beside its input), writing
    ``PARAM`` and ``BIN`` there; its warnings."""
    import shutil

    import pnnx

    onnx_path = Path(shutil.copyfile(source, out / "model.onnx"))
    files = {"ncnnparam": PARAM, "ncnnbin": BIN, "ncnnpy": "model_ncnn.py", "pnnxparam": "model.pnnx.param",
             "pnnxbin": "model.pnnx.bin", "pnnxpy": "model_pnnx.py", "pnnxonnx": "model.pnnx.onnx"}
    args = [pnnx.EXEC_PATH, str(onnx_path), f"fp16={int(half)}",
            *(f"{k}={out / v}" for k, v in files.items())]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=out)
    except subprocess.TimeoutExpired as e:
        raise AttnDeployError(f"pnnx did not finish converting {source} in 15 minutes") from e
    said = (done.stdout + done.stderr).splitlines()
    warnings = [line.strip() for line in said if "not supported" in line or "unsupported" in line.lower()]
    if done.returncode != 0 or not (out / PARAM).exists():
        tail = "; ".join(warnings or [line for line in said if line.strip()][-3:])
        raise AttnDeployError(f"pnnx cannot convert {source} (exit {done.returncode}): {tail[:400]}")
    return warnings


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send the process's own stderr (where ncnn's C++ code writes) to ``path`` for the duration."""
    saved = os.dup(2)
    with open(path, "w") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _load(net, param: Path) -> None:
    """Load ``param`` and its ``.bin`` into ``net``; ncnn's refusal is an error that names the layer."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stderr"
        with _stderr_to(log):
            failed = net.load_param(str(param)) != 0 or net.load_model(str(param.with_suffix(".bin"))) != 0
        said = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    if failed:
        raise AttnDeployError(f"ncnn cannot load {param}: {'; '.join(said[:3]) or 'no reason given'}")


def export(onnx_path: Path, output: Path, options: NcnnOptions) -> ExportResult:
    """Convert ``onnx_path`` with pnnx into the directory ``output``, with ultralytics' ``metadata.yaml``; atomic.
    The model must load in ncnn: pnnx's warnings alone do not fail it, ncnn's refusal does (naming the layer)."""
    import ncnn

    from .onnx import read_metadata

    require()
    check_writable(output, options.force)
    metadata = read_metadata(onnx_path)
    if int(metadata.get("batch", 1)) != 1 or metadata.get("dynamic") in (True, "True"):
        raise AttnDeployError("ncnn takes one image at a time: export at --batch 1 without --dynamic")
    metadata["args"] = {**metadata.get("args", {}), "half": options.half}
    warnings: list[str] = []

    def write(directory: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            warnings.extend(_pnnx(onnx_path, Path(tmp), options.half))
            net = ncnn.Net()
            try:
                _load(net, Path(tmp) / PARAM)
            except AttnDeployError as e:
                raise AttnDeployError(f"{e}{'; pnnx warned: ' + '; '.join(warnings) if warnings else ''}") from None
            finally:
                net.clear()
            for name in (PARAM, BIN):
                os.replace(Path(tmp) / name, directory / name)
        (directory / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))

    write_dir_atomic(output, write)
    notes = [f"weights {'fp16' if options.half else 'fp32'} (pnnx {version()[1]})"] + [f"pnnx: {w}" for w in warnings]
    return ExportResult(output, "ncnn", notes)


def version() -> tuple[str, str]:
    """(ncnn, pnnx) versions."""
    from importlib.metadata import version as installed

    return installed("ncnn"), installed("pnnx")


def _param(path: Path) -> Path:
    return model_file(path, ".param", "ncnn")


def read_metadata(path: Path) -> dict:
    """The ``metadata.yaml`` beside an ncnn model."""
    sidecar = _param(Path(path)).parent / "metadata.yaml"
    return (yaml.safe_load(sidecar.read_text()) or {}) if sidecar.exists() else {}


class Runner:
    """Runs an ncnn model on the CPU, one image at a time (ncnn has no batch axis), with ``settings``
    (default: the precision the export was made for, packed layout) on ``threads`` threads."""

    backend = "ncnn"
    device = "cpu"

    def __init__(self, path: Path, threads: int | None = None, settings: NcnnSettings | None = None):
        require()
        import ncnn

        self.param = _param(Path(path))
        self.meta = read_metadata(self.param)
        half = bool(self.meta.get("args", {}).get("half"))
        self.settings = settings or NcnnSettings("fp16" if half else "fp32")
        self.precision = self.settings.precision
        self.mode = "" if self.settings.packing else "unpacked"
        self.net = ncnn.Net()
        for name, value in options(self.settings, threads).items():
            setattr(self.net.opt, name, value)
        _load(self.net, self.param)
        # pnnx names the outputs out0, out1, ... in the ONNX file's order
        self.inputs = self.net.input_names()
        self.outputs = sorted(self.net.output_names(), key=lambda name: (len(name), name))
        self.version = ncnn.__version__
        self.threads = threads

    @property
    def input_shape(self) -> list:
        h, w = self.meta.get("imgsz", [640, 640])
        return [1, int(self.meta.get("channels", 3)), h, w]

    @property
    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.meta.items()}

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import ncnn

        x = inputs[0]
        if x.ndim != 4 or ("imgsz" in self.meta and list(x.shape[1:]) != self.input_shape[1:]):
            raise AttnDeployError(f"input of shape {tuple(x.shape)} does not fit the model's input "
                                  f"{['batch', *self.input_shape[1:]]}")
        results = []
        for sample in np.ascontiguousarray(x, dtype=np.float32):
            with self.net.create_extractor() as extractor:
                # a Mat of its own: a first layer that works in place (Erf, LayerNorm, ...) crashes on numpy's memory
                extractor.input(self.inputs[0], ncnn.Mat(sample).clone())
                results.append([np.array(extractor.extract(name)[1]) for name in self.outputs])
        return [np.stack(outputs) for outputs in zip(*results)]

    def close(self) -> None:
        if self.net is not None:
            self.net.clear()
        self.net = None


def options(settings: NcnnSettings, threads: int | None = None) -> dict:
    """The ``ncnn.Option`` fields ``settings`` set: what a user sets on ``net.opt`` to run the model as it was timed."""
    half, bf16 = settings.precision == "fp16", settings.precision == "bf16"
    found = {"use_vulkan_compute": False, "use_packing_layout": settings.packing,
             "use_winograd_convolution": settings.winograd, "use_fp16_storage": half,
             "use_fp16_packed": half, "use_fp16_arithmetic": half, "use_bf16_storage": bf16, "use_bf16_packed": bf16}
    return found | ({"num_threads": threads} if threads else {})
