"""TensorRT: build an engine from an exported ONNX file, write it as ultralytics does, and run it.

Targets the TensorRT 10 and 11 Python APIs. The build goes ``Builder.create_network`` ->
``OnnxParser.parse_from_file`` -> ``IBuilderConfig`` (``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``,
``Builder.create_optimization_profile`` with ``IOptimizationProfile.set_shape``, ``create_timing_cache`` /
``set_timing_cache`` and ``ITimingCache.serialize``) -> ``Builder.build_serialized_network``.

TensorRT 10 networks are weakly typed: fp16 sets ``BuilderFlag.FP16``; int8 sets ``BuilderFlag.INT8`` (and FP16)
and calibrates with an ``IInt8EntropyCalibrator2``. TensorRT 11 removed those flags and ``IInt8Calibrator``: every
network is strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, accepted and ignored there), so the
precision comes from the ONNX itself: fp16 casts from a mixed-precision export, Q/DQ nodes for int8.

The runner uses the named-tensor API: ``ICudaEngine.num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` /
``get_tensor_dtype`` / ``get_tensor_shape`` / ``get_tensor_profile_shape``, and ``IExecutionContext.set_input_shape``
/ ``set_tensor_address`` / ``execute_async_v3`` on a torch CUDA stream, with torch CUDA tensors as buffers.

Written against NVIDIA's TensorRT 10 and 11 Python API documentation and its 10.x -> 11.x migration guide, and
not run where it was written: TensorRT could not be installed there and there was no GPU. The engine file's
header (ultralytics' layout, so ``ultralytics.YOLO("model.engine")`` loads it) is tested without TensorRT.
"""

import ast
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AttnDeployError
from ..files import check_writable, write_atomic
from . import ExportResult

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = "pip install 'attn-deploy[tensorrt]'"
MIN_MAJOR = 10
STRONGLY_TYPED_MAJOR = 11  # TensorRT 11 removed weak typing, the precision flags and IInt8Calibrator
GIB = 1 << 30
LENGTH_BYTES = 4  # the header's little-endian JSON length, as ultralytics writes and reads it


@dataclass
class TensorRTOptions:
    precision: str = "fp16"
    batch: int = 1
    dynamic: bool = False
    max_batch: int = 16
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    calibration: list[Path] = field(default_factory=list)
    force: bool = False


def _import_tensorrt():
    try:
        import tensorrt
    except (ImportError, OSError):  # OSError: a wheel whose libnvinfer cannot be loaded
        return None
    return tensorrt


def _major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def missing() -> str | None:
    """None when TensorRT can build and run here; otherwise one sentence naming what is missing."""
    trt = _import_tensorrt()
    if trt is None:
        return f"TensorRT is not installed: the tensorrt package cannot be imported ({INSTALL_HINT})"
    if _major(trt) < MIN_MAJOR:
        return f"TensorRT {trt.__version__} is older than {MIN_MAJOR} ({INSTALL_HINT})"
    import torch

    if not torch.cuda.is_available():
        return "TensorRT needs a CUDA GPU, and torch.cuda.is_available() is False here"
    return None


def strongly_typed() -> bool:
    """Whether the installed TensorRT builds only strongly typed networks (precision from the ONNX types)."""
    trt = _import_tensorrt()
    return trt is not None and _major(trt) >= STRONGLY_TYPED_MAJOR


def require():
    """The imported ``tensorrt`` module, or an ``AttnDeployError`` saying what is missing."""
    reason = missing()
    if reason is not None:
        raise AttnDeployError(reason)
    import tensorrt

    return tensorrt


def write_engine_file(path: Path, metadata: dict, engine) -> Path:
    """``engine`` (bytes, or TensorRT's ``IHostMemory``) behind a 4-byte little-endian length and that many bytes of
    UTF-8 JSON ``metadata``: the header ultralytics' ``BaseBackend.engine_header`` reads. Written atomically."""
    header = json.dumps(metadata, default=str).encode()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(len(header).to_bytes(LENGTH_BYTES, "little"))
            f.write(header)
            f.write(engine)

    return write_atomic(Path(path), write)


def read_header(path: Path) -> tuple[int, dict]:
    """Offset of the engine bytes and the header metadata; ``(0, {})`` for a bare engine, as ultralytics reads it."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(LENGTH_BYTES), "little")
        if 0 < length <= f.seek(0, 2) - LENGTH_BYTES:  # a length that overruns the file is engine bytes
            f.seek(LENGTH_BYTES)
            try:
                metadata = json.loads(f.read(length))
            except ValueError:  # engine bytes that happen to make a plausible length
                metadata = None
            if isinstance(metadata, dict):
                return LENGTH_BYTES + length, metadata
    return 0, {}


def _args(metadata: dict) -> dict:
    # metadata read back as strings (the ONNX runner's) holds args as a repr
    args = metadata.get("args", {})
    return ast.literal_eval(args) if isinstance(args, str) else dict(args)


def engine_precision(header: dict) -> str:
    """The precision an engine was built at, from its metadata header."""
    return str(_args(header).get("precision", "fp16"))


def _engine_metadata(metadata: dict, options: TensorRTOptions) -> dict:
    args = {**_args(metadata), "batch": options.batch, "precision": options.precision, "dynamic": options.dynamic}
    return {**metadata, "batch": options.batch, "args": args}


def _logger(trt):
    """A TensorRT logger that keeps the errors for the exception rather than printing them."""

    class Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)

    return Log()


def _reason(log) -> str:
    return "; ".join(log.errors[-3:]) or "TensorRT logged no error"


def _check_options(options: TensorRTOptions) -> None:
    if options.precision not in PRECISIONS:
        raise AttnDeployError(f"precision {options.precision!r}: expected one of {', '.join(PRECISIONS)}")
    if options.batch < 1 or (options.dynamic and options.max_batch < options.batch):
        raise AttnDeployError(f"batch {options.batch}, max_batch {options.max_batch}: need 1 <= batch <= max_batch")
    if options.workspace_gib <= 0:
        raise AttnDeployError(f"workspace_gib {options.workspace_gib}: must be positive")


def _has_fp16(graph) -> bool:
    import onnx

    half = onnx.TensorProto.FLOAT16
    casts = (a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to")
    values = (v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info))
    return any(t.data_type == half for t in graph.initializer) or half in casts or half in values


def _check_calibration(options: TensorRTOptions) -> None:
    """TensorRT 10 calibrates int8 on images: they must be there before a build that can take minutes."""
    if options.precision != "int8":
        return
    if not options.calibration:
        raise AttnDeployError("int8 on TensorRT 10 calibrates on images: pass calibration images")
    absent = [str(p) for p in options.calibration if not Path(p).is_file()]
    if absent:
        raise AttnDeployError(f"calibration images not found: {', '.join(absent[:5])}")


def _check_typed_graph(onnx_path: Path, precision: str) -> None:
    """TensorRT 11 takes the precision from the ONNX: it must hold the precision asked for."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if precision == "int8" and not any(n.op_type == "QuantizeLinear" for n in graph.node):
        raise AttnDeployError(f"TensorRT 11 builds int8 only from an ONNX with Q/DQ nodes, and {onnx_path} has no "
                              "QuantizeLinear; export with --int8 --target trt, which writes the Q/DQ "
                              "<stem>.trt.int8.onnx")
    if precision != "int8" and (precision == "fp16") != _has_fp16(graph):
        held = "holds float16 tensors" if precision == "fp32" else "holds no float16"
        raise AttnDeployError(f"TensorRT 11 takes the precision from the ONNX, and {onnx_path} {held}; "
                              f"pass the {precision} export for a {precision} engine")


def _network_flags(trt, strongly_typed: bool) -> int:
    if not strongly_typed:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _parse(trt, builder, log, onnx_path: Path, strongly_typed: bool):
    """The network and its parser: the parser owns the weights the network points at until the build is done."""
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)] or log.errors or ["no reason given"]
        raise AttnDeployError(f"TensorRT's ONNX parser refused {onnx_path}:\n  " + "\n  ".join(errors))
    return network, parser


def _input(network, options: TensorRTOptions) -> tuple[str, tuple[int, ...]]:
    """The one input's name and shape (batch -1 when dynamic), checked against the options."""
    if network.num_inputs != 1:
        raise AttnDeployError(f"the network has {network.num_inputs} inputs; a detector has one")
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if len(shape) != 4 or any(d < 0 for d in shape[1:]):
        raise AttnDeployError(f"input {tensor.name} has shape {shape}; expected (batch, 3, H, W) with a fixed H, W")
    if options.dynamic and shape[0] >= 0:
        raise AttnDeployError(f"a dynamic engine needs an ONNX with a dynamic batch axis; {tensor.name} is {shape}")
    if shape[0] >= 0 and shape[0] != options.batch:
        raise AttnDeployError(f"the ONNX input has batch {shape[0]}, not {options.batch}; export it at that batch")
    return tensor.name, shape


def _profile(builder, name: str, shape: tuple[int, ...], options: TensorRTOptions):
    low, high = (1, options.max_batch) if options.dynamic else (options.batch, options.batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(name, (low, *shape[1:]), (options.batch, *shape[1:]), (high, *shape[1:]))
    return profile


def _calibration_cache(onnx_path: Path, output: Path, images: list[Path], batch: int) -> Path:
    """Beside the output, named by what it was computed from, so another model or image set never reuses it."""
    digest = hashlib.sha256(onnx_path.read_bytes())
    digest.update(json.dumps([batch, *map(str, images)]).encode())
    return output.with_name(f"{output.stem}.int8-{digest.hexdigest()[:12]}.cache")


def _calibrator(trt, images: list[Path], imgsz: tuple[int, int], batch: int, cache: Path):
    """An entropy calibrator (TensorRT 10) over letterboxed ``images`` in batches of ``batch`` on the GPU."""
    import torch

    from ..data import Batches

    calibration = Batches(tuple(Path(p) for p in images), imgsz, batch)  # read as TensorRT asks, batch by batch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.done = 0
            self.error = None
            self.buffer = torch.empty((batch, 3, *imgsz), dtype=torch.float32, device="cuda")

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.done >= len(calibration):
                return None
            try:
                chunk = calibration[self.done]
            except AttnDeployError as e:  # an exception cannot cross back into TensorRT: stop, and raise after
                self.error = e
                return None
            self.buffer.copy_(torch.from_numpy(chunk))
            self.done += 1
            return [self.buffer.data_ptr()]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data):
            if self.error is None:  # scales from a calibration cut short would be reused as if whole
                write_atomic(cache, lambda tmp: tmp.write_bytes(bytes(data)))

    return Calibrator()


def _weak_precision(trt, config, options: TensorRTOptions, onnx_path: Path, output: Path,
                    imgsz: tuple[int, int], notes: list[str]):
    """TensorRT 10's precision flags, and the calibrator for int8 (None otherwise)."""
    if options.precision == "fp32":
        return None
    config.set_flag(trt.BuilderFlag.FP16)  # with int8 too: layers left out of int8 run in fp16 rather than fp32
    if options.precision == "fp16":
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    cache = _calibration_cache(onnx_path, output, options.calibration, options.batch)
    calibrator = _calibrator(trt, options.calibration, imgsz, options.batch, cache)
    config.int8_calibrator = calibrator
    notes.append(f"int8 calibration cache: {cache}")
    return calibrator


def _attach_timing_cache(config, path: Path | None, notes: list[str]):
    if path is None:
        return None
    cache = config.create_timing_cache(path.read_bytes() if path.exists() else b"")
    if cache is None or not config.set_timing_cache(cache, False):
        # made by another TensorRT or GPU: its timings would mislead, so start a fresh one in its place
        notes.append(f"timing cache {path} was made by another TensorRT or GPU; it is replaced")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _config(trt, builder, network, options: TensorRTOptions):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * GIB))
    if options.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; it rounds fp32 matmul inputs to 10-bit mantissas
    name, shape = _input(network, options)
    if shape[0] < 0:
        config.add_optimization_profile(_profile(builder, name, shape, options))
    return config, shape


def export(onnx_path: Path, output: Path, options: TensorRTOptions, metadata: dict) -> ExportResult:
    """Build ``onnx_path`` into a TensorRT engine at ``output`` behind ultralytics' metadata header, atomically."""
    onnx_path, output = Path(onnx_path), Path(output)
    check_writable(output, options.force)
    _check_options(options)
    trt = require()
    if not onnx_path.exists():
        raise AttnDeployError(f"{onnx_path} does not exist")
    strongly_typed = _major(trt) >= STRONGLY_TYPED_MAJOR
    if strongly_typed:
        _check_typed_graph(onnx_path, options.precision)
    else:
        _check_calibration(options)
    result = ExportResult(output, "trt")
    log = _logger(trt)
    builder = trt.Builder(log)
    network, parser = _parse(trt, builder, log, onnx_path, strongly_typed)
    config, shape = _config(trt, builder, network, options)
    calibrator = None
    if strongly_typed:
        result.notes.append(f"TensorRT {trt.__version__} is strongly typed: the precision is the ONNX's own")
    else:
        calibrator = _weak_precision(trt, config, options, onnx_path, output, shape[2:], result.notes)
    timing_cache = Path(options.timing_cache) if options.timing_cache else None
    cache = _attach_timing_cache(config, timing_cache, result.notes)
    engine = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if engine is None:
        raise AttnDeployError(f"TensorRT could not build {onnx_path} ({options.precision}): {_reason(log)}")
    write_engine_file(output, _engine_metadata(metadata, options), engine)
    if cache is not None:
        write_atomic(timing_cache, lambda tmp: tmp.write_bytes(bytes(cache.serialize())))
    del parser  # held until here: the network points into the weights it owns
    return result


def _torch_dtype(trt, dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(dtype))).dtype


class Runner:
    """Runs a TensorRT engine file on one CUDA device, its buffers held as torch CUDA tensors."""

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path, device: int = 0):
        trt = require()
        import torch

        path = Path(path)
        if not path.exists():
            raise AttnDeployError(f"{path} does not exist")
        offset, self.header = read_header(path)
        self.cuda = torch.device("cuda", device)
        self.log = _logger(trt)  # TensorRT calls it for as long as the runtime and the engine live
        with open(path, "rb") as f, torch.cuda.device(self.cuda):  # the engine binds to the current device
            f.seek(offset)
            self.runtime = trt.Runtime(self.log)
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
            if self.engine is None:
                raise AttnDeployError(f"TensorRT {trt.__version__} cannot load {path}: {_reason(self.log)}")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise AttnDeployError(f"TensorRT cannot create an execution context for {path}: {_reason(self.log)}")
            self.stream = torch.cuda.Stream(self.cuda)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        inputs = [n for n in names if modes[n] == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise AttnDeployError(f"{path} has {len(inputs)} inputs; a detector engine has one")
        self.input = inputs[0]
        self.outputs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.precision = engine_precision(self.header)
        self.version = trt.__version__

    @property
    def input_shape(self) -> list:
        shape = self.engine.get_tensor_shape(self.input)
        return [d if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(shape)]

    @property
    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.header.items()}

    def _fit(self, shape: tuple[int, ...]) -> None:
        """Check ``shape`` against the engine, and set it on the context when the batch is dynamic."""
        expected = self.input_shape
        if len(shape) != len(expected) or any(isinstance(d, int) and d != s for d, s in zip(expected, shape)):
            raise AttnDeployError(f"input of shape {shape} does not fit the engine's input {expected}")
        if all(isinstance(d, int) for d in expected):
            return
        low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input, 0))
        inside = all(lo <= s <= hi for lo, s, hi in zip(low, shape, high))
        if not inside or not self.context.set_input_shape(self.input, shape):
            raise AttnDeployError(f"input of shape {shape} is outside the engine's profile, {low} to {high}")

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        x = np.ascontiguousarray(inputs[0], dtype=np.float32)
        self._fit(tuple(x.shape))
        with torch.cuda.device(self.cuda), torch.cuda.stream(self.stream):
            images = torch.from_numpy(x).to(self.cuda).to(self.dtypes[self.input])
            outputs = {n: torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=self.dtypes[n], device=self.cuda)
                       for n in self.outputs}
            for name, tensor in [(self.input, images), *outputs.items()]:
                self.context.set_tensor_address(name, tensor.data_ptr())
            ok = self.context.execute_async_v3(self.stream.cuda_stream)
            self.stream.synchronize()
            if not ok:
                raise AttnDeployError(f"TensorRT could not run the engine: {_reason(self.log)}")
            return [outputs[n].float().cpu().numpy() for n in self.outputs]

    def close(self) -> None:
        # in this order: a context needs its engine, an engine the runtime that made it
        self.context = None
        self.engine = None
        self.runtime = None
