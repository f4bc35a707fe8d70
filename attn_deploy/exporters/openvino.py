"""OpenVINO: convert an exported ONNX file to IR (.xml/.bin) that ultralytics predicts with, and run it.

The IR goes in ``<stem>_openvino_model/`` with the ``metadata.yaml`` that ultralytics' OpenVINO backend
reads, so ``ultralytics.YOLO("<stem>_openvino_model/")`` works on it. FP16 compresses the weights; the
device still computes at its inference precision.

The CPU plugin computes in bf16 by default on CPUs with AVX512-BF16 or AMX, and users who never set a
hint get that. ``Runner(precision="fp32")`` sets the f32 inference-precision hint (parity runs so);
``Runner(precision=None)`` keeps the device's default, whose error parity reports separately.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import AttnDeployError
from ..files import check_writable, model_file, write_dir_atomic
from . import ExportResult, silenced

# ov.Type names as precision names; the parity tolerances are keyed by the latter
PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}


@dataclass
class OpenVINOOptions:
    half: bool = False  # FP16-compressed weights
    force: bool = False


def model_dir(onnx_path: Path) -> Path:
    """Where ultralytics looks for an OpenVINO export of ``onnx_path``."""
    return onnx_path.with_name(f"{onnx_path.stem}_openvino_model")


def export(onnx_path: Path, output: Path, options: OpenVINOOptions) -> ExportResult:
    """Convert ``onnx_path`` to IR in the directory ``output``, with ultralytics' ``metadata.yaml``; atomic."""
    check_writable(output, options.force)
    _save(_convert(onnx_path), output, onnx_path, {"half": options.half}, options.half)
    return ExportResult(output, "openvino", [f"weights {'FP16' if options.half else 'FP32'}"])


def int8_dir(onnx_path: Path) -> Path:
    """Where the INT8 IR of ``onnx_path`` goes."""
    return onnx_path.with_name(f"{onnx_path.stem}_int8_openvino_model")


def quantize(onnx_path: Path, output: Path, calibration: Sequence[np.ndarray], keep: list[str],
             force: bool = False) -> ExportResult:
    """INT8 IR by NNCF post-training quantization on ``calibration`` batches; the ONNX nodes named in
    ``keep`` (the attention-sensitive ones, measured) take no quantized inputs and stay in float. NNCF iterates
    the batches and keeps reduced statistics per batch, so a ``data.Batches`` is read one batch at a time."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)  # the library prints nothing; progress is the caller's
    check_writable(output, force)
    model = _convert(onnx_path)
    names = {op.get_friendly_name() for op in model.get_ops()}
    # OpenVINO splits a biased Conv into Convolution "<name>/WithoutBiases" and Add "<name>".
    ignored = sorted(n for name in keep for n in (name, f"{name}/WithoutBiases") if n in names)
    try:
        with silenced():
            quantized = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED,
                                      subset_size=len(calibration), ignored_scope=nncf.IgnoredScope(names=ignored))
    except Exception as e:
        raise AttnDeployError(f"NNCF cannot quantize {onnx_path}: {type(e).__name__}: {str(e)[:300]}") from e
    _save(quantized, output, onnx_path, {"int8": True}, False)
    note = f"INT8 (NNCF, {len(calibration)} calibration batches); {len(ignored)} sensitive ops left in float"
    return ExportResult(output, "openvino", [note])


def _deform_conv(node):
    """ONNX DeformConv as OpenVINO's DeformableConvolution-8 (its ONNX frontend has no DeformConv).

    The offsets have the same layout; ``bilinear_interpolation_pad`` gives torchvision's (and ONNX's)
    zero padding of samples that fall partly outside the input. The bias is added after.
    """
    import openvino.opset1 as ops1
    import openvino.opset8 as ops8

    def attr(name: str, default):
        return node.get_attribute(name) if node.has_attribute(name) else default

    pads = list(attr("pads", [0, 0, 0, 0]))
    inputs = [node.get_input(i) for i in range(node.get_input_size())]
    y = ops8.deformable_convolution(inputs[0], inputs[2], inputs[1], list(attr("strides", [1, 1])), pads[:2],
                                    pads[2:], list(attr("dilations", [1, 1])), inputs[4] if len(inputs) > 4 else None,
                                    group=attr("group", 1), deformable_group=attr("offset_group", 1),
                                    bilinear_interpolation_pad=True)
    if len(inputs) > 3:
        y = ops1.add(y, ops1.reshape(inputs[3], np.array([1, -1, 1, 1], dtype=np.int64), False))
    return [y.output(0)]


def _convert(onnx_path: Path):
    import openvino as ov
    from openvino.frontend.onnx import ConversionExtension

    try:
        return ov.convert_model(str(onnx_path), extension=[ConversionExtension("DeformConv", _deform_conv)])
    except Exception as e:
        raise AttnDeployError(f"OpenVINO cannot convert {onnx_path}: {str(e).splitlines()[0][:300]}") from e


def _save(model, output: Path, onnx_path: Path, args: dict, half: bool) -> None:
    import openvino as ov

    from .onnx import read_metadata

    metadata = read_metadata(onnx_path)
    metadata["args"] = {**metadata.get("args", {}), **args}

    def write(directory: Path) -> None:
        ov.save_model(model, directory / f"{output.name.removesuffix('_openvino_model')}.xml", compress_to_fp16=half)
        (directory / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))

    write_dir_atomic(output, write)


def _xml(path: Path) -> Path:
    return model_file(path, ".xml", "OpenVINO")


def _has_fp16_weights(model) -> bool:
    import openvino as ov

    return any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in model.get_ops())


def _quantized(model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def half_weights(path: Path) -> bool:
    """Whether the IR at ``path`` holds FP16-compressed weights; reads the model without compiling it."""
    import openvino as ov

    return _has_fp16_weights(ov.Core().read_model(_xml(Path(path))))


class Runner:
    """Runs an OpenVINO IR on ``device`` at ``precision`` ("fp32": the f32 hint; None: the device's default)."""

    backend = "openvino"

    def __init__(self, path: Path, device: str = "CPU", precision: str | None = "fp32", threads: int | None = None,
                 mode: str = "latency", batch: int | None = None, profiling: bool = False):
        import openvino as ov

        self.xml = _xml(Path(path))
        core = ov.Core()
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices} | {"AUTO"}:
            raise AttnDeployError(f"OpenVINO device {device} is not available here; available: "
                                  f"{', '.join(core.available_devices)}")
        self.model = core.read_model(self.xml)
        if batch and self.model.input().get_partial_shape()[0].is_dynamic:
            self.model.reshape([batch, *self.model.input().get_partial_shape()[1:]])
        self.mode = mode
        try:
            self.compiled = core.compile_model(self.model, device, compile_config(precision, threads, mode, profiling))
        except Exception as e:
            raise AttnDeployError(f"OpenVINO cannot compile {self.xml} for {device}: {str(e).splitlines()[0]}") from e
        self.device = device
        self.inference_precision = self._inference_precision()
        self.precision = "int8" if _quantized(self.model) else "fp16" if (
            _has_fp16_weights(self.model) and self.inference_precision == "fp32") else self.inference_precision
        self.version = ov.get_version()
        self.request = None

    def _inference_precision(self) -> str:
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        except RuntimeError:  # devices that do not report it compute at the model's precision
            return "fp32"
        return PRECISIONS.get(hint.get_type_name(), hint.get_type_name())

    @property
    def input_shape(self) -> list:
        return [d.get_length() if d.is_static else "batch" for d in self.model.input().get_partial_shape()]

    def runtime_settings(self) -> dict:
        """What the plugin chose under the hint: streams, requests in flight, threads, inference precision."""
        names = {"streams": "NUM_STREAMS", "requests": "OPTIMAL_NUMBER_OF_INFER_REQUESTS",
                 "threads": "INFERENCE_NUM_THREADS"}
        found = {}
        for key, name in names.items():
            try:
                found[key] = int(self.compiled.get_property(name))
            except (RuntimeError, TypeError, ValueError):  # a device that does not report it
                continue
        return {**found, "inference_precision": self.inference_precision}

    @property
    def metadata(self) -> dict[str, str]:
        sidecar = self.xml.parent / "metadata.yaml"
        data = yaml.safe_load(sidecar.read_text()) if sidecar.exists() else {}
        return {k: str(v) for k, v in (data or {}).items()}

    def _checked(self, inputs: list[np.ndarray]) -> np.ndarray:
        import openvino as ov

        x = inputs[0].astype(np.float32, copy=False)
        shape = self.model.input().get_partial_shape()
        if not shape.compatible(ov.PartialShape(list(x.shape))):
            raise AttnDeployError(f"input of shape {tuple(x.shape)} does not fit the model's input {shape}")
        return x

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.request = self.request or self.compiled.create_infer_request()
        results = self.request.infer(self._checked(inputs))
        return [np.asarray(results[out]) for out in self.compiled.outputs]

    def pipelined(self, x: np.ndarray, iters: int, seconds: float) -> tuple[list[float], float]:
        """Keep the device's optimal number of requests in flight for at least ``iters`` requests and ``seconds``;
        returns each request's latency (ms) and the wall time (s). The oldest request is waited for and
        restarted in turn (no Python callbacks: they deadlock against the GIL when the model is released)."""
        import openvino as ov

        tensor = ov.Tensor(self._checked([x]))
        requests = [self.compiled.create_infer_request()
                    for _ in range(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))]
        latencies: list[float] = []
        start = time.perf_counter()
        for request in requests:
            request.set_input_tensor(tensor)
            request.start_async()
        sent = len(requests)
        while sent < iters or time.perf_counter() - start < seconds:
            request = requests[sent % len(requests)]
            request.wait()
            latencies.append(request.latency)
            request.start_async()
            sent += 1
        for request in requests:
            request.wait()
            latencies.append(request.latency)
        return latencies, time.perf_counter() - start

    def _fused_matmuls(self) -> set[str]:
        """The ``Subgraph`` layers that fused a MatMul: the CPU plugin fuses element-wise chains into them, and
        also whole MatMul-Softmax-MatMul attention blocks."""
        fused = set()
        for op in self.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == "Subgraph" and "MatMul" in info["originalLayersNames"].astype(str):
                fused.add(op.get_friendly_name())
        return fused

    def op_times(self, x: np.ndarray, runs: int) -> list[tuple[str, str, float]]:
        """(layer, type, ms per run) over ``runs`` runs, from the per-layer counters (needs ``profiling=True``).
        A Subgraph that fused a MatMul is typed ``Subgraph+MatMul``."""
        fused = self._fused_matmuls()
        totals: dict[tuple[str, str], float] = {}
        for _ in range(runs):
            self.run([x])
            for p in self.request.profiling_info:
                if p.status.name == "EXECUTED":
                    key = (p.node_name, "Subgraph+MatMul" if p.node_name in fused else p.node_type)
                    totals[key] = totals.get(key, 0.0) + p.real_time.total_seconds() * 1e3
        return [(name, kind, ms / runs) for (name, kind), ms in totals.items()]

    def close(self) -> None:
        self.request = self.compiled = self.model = None


def compile_config(precision: str | None, threads: int | None, mode: str, profiling: bool = False) -> dict:
    """Compile options: the f32 hint for "fp32", the performance hint of ``mode``, threads, per-layer counters."""
    config = {"PERFORMANCE_HINT": mode.upper(), "PERF_COUNT": profiling}
    if precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config
