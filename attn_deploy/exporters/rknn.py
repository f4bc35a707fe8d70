"""RKNN (Rockchip NPUs): build an ONNX export with rknn-toolkit2 and run it in the toolkit's x86 simulator.

rknn-toolkit2's pins conflict with attn-deploy's environment, so it lives in an environment of its own and runs
behind a process boundary: ``rknn_worker.py`` beside this file, started with that environment's interpreter, files
and JSON in and out. This module never imports rknn. ``attn-deploy setup rknn`` creates the environment in the
user's cache; ``--rknn-python`` (or ``ATTN_DEPLOY_RKNN_PYTHON``) names one the user made.

The artefact is ``<stem>_rknn_model/`` as ultralytics lays it out: ``<stem>-<platform>.rknn`` and
``metadata.yaml``. The model takes NHWC pixels in [0, 255] (it divides by 255 itself). The NPU computes in fp16,
so a float build is judged at fp16's tolerance. The simulator runs only models built in its own process, so the
runner builds again from the ONNX beside the artefact (``<stem>.onnx``, the file the build read).

A failing build's departure is also looked for with the toolkit's own per-layer accuracy analysis (``analyse``):
each layer's output in the simulator against the toolkit's fp32 golden run, named by the module path its tensor's
name carries.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import AttnDeployError
from ..files import check_writable, write_atomic, write_dir_atomic
from . import ExportResult

WORKER = Path(__file__).with_name("rknn_worker.py")
TOOLKIT = "2.3.2"  # 2.5.0 cannot build YOLOv8's DFL conv; ultralytics pins >=2.3.2,<2.5 for the same reason
# Every target_platform rknn-toolkit2 2.3.2's config accepts (each checked); the RV1103/RV1106 NPUs run INT8 only.
PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rk2118", "rv1126b", "rv1103", "rv1106", "rv1103b",
             "rv1106b")
INT8_ONLY = frozenset({"rv1103", "rv1106", "rv1103b", "rv1106b"})
ENV_VAR = "ATTN_DEPLOY_RKNN_PYTHON"
# INT8: the calibration images a build reads (spread over those given), their list's name in the artefact, and the
# heads whose output0 starts with pixel coordinates, divided by the input size before the build (ultralytics' layout)
CALIBRATION_IMAGES = 32
ALGORITHM = "quantized_algorithm"  # rknn-toolkit2's name for how it chooses the ranges, kept in the metadata's args
DATASET = "dataset.txt"
# INT8: the head's last tensors stay in float16 (the toolkit's hybrid quantization), named in the metadata's args.
# One int8 scale over output0 spans the outlying coordinates of background anchors (-0.2 to 3.8 times the input on
# the SimAM fixture): a step of 2.5 px at 160. Measured there on 24 validation images against onnxruntime: mean box
# error 0.72 px all int8, 0.60 with the whole head in float16, 0.40 with these; the attention module in float16: 0.72.
FLOAT = "float_tensors"
HEAD_LEVELS = 2  # the outputs, what their producers read, and what those read
NORMALISED_TASKS = frozenset({"detect", "segment", "pose", "obb"})

# The environment: rknn-toolkit2 and what its ONNX path imports, each pinned and installed without resolving
# dependencies. rknn imports torch at module level but converts ONNX without it, so the CPU wheel, and none of
# torch's own dependencies beyond the three its import needs, is enough (measured: 1.4 GB, against 5.6 GB for the
# CUDA torch 2.4 that the toolkit's metadata asks for). OpenCV headless stands in for opencv-python (same module).
PINS = (f"rknn-toolkit2=={TOOLKIT}", "numpy==1.26.4", "onnx==1.17.0", "onnxruntime==1.19.2", "protobuf==4.25.4",
        "setuptools==81.0.0", "psutil==7.2.2", "ruamel.yaml==0.19.1", "ruamel.yaml.clib==0.2.15", "scipy==1.17.1",
        "tqdm==4.70.1", "fast-histogram==0.14", "opencv-python-headless==5.1.0.95", "typing_extensions==4.16.0",
        "filelock==4.3.2", "fsspec==2026.9.0")
TORCH = "torch==2.13.0+cpu"


def default_env() -> Path:
    """Where ``attn-deploy setup rknn`` puts the environment: the user's cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "attn-deploy" / "rknn"


def _interpreter(env: Path) -> Path:
    return env / "bin" / "python"


def missing_message(detail: str) -> str:
    return (f"--target rknn needs rknn-toolkit2 {TOOLKIT} in an environment of its own, and {detail}. Create it with "
            f"`attn-deploy setup rknn` (or pass --rknn-python PATH to one you made). Nothing was written.")


def find_python(explicit: Path | None = None) -> Path:
    """The interpreter of the RKNN environment: ``explicit``, else $ATTN_DEPLOY_RKNN_PYTHON, else the cache's."""
    named = explicit or (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    python = Path(named) if named else _interpreter(default_env())
    if not python.is_file():
        raise AttnDeployError(missing_message(f"{python} does not exist" if named else f"none was found ({python})"))
    return python


def _call(python: Path, job: dict, timeout: float = 600) -> dict:
    """Run one worker job and return its answer; a failure to start or answer is one error."""
    try:
        done = subprocess.run([str(python), str(WORKER)], input=json.dumps(job) + "\n", capture_output=True,
                              text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AttnDeployError(missing_message(f"{python} cannot run it ({type(e).__name__}: {e})")) from e
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):  # the worker died before answering (rknn-toolkit2 can segfault on a graph)
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"ok": False, "error": f"the worker ended with exit status {done.returncode} without answering ({tail})"}


def probe(python: Path) -> dict:
    """The versions in the environment at ``python``; a bad environment (no rknn, a wrong version) is one error."""
    answer = _call(python, {"action": "probe"}, timeout=300)
    if not answer["ok"]:
        raise AttnDeployError(missing_message(f"{python} cannot import it ({answer['error']})"))
    found = answer["versions"]["rknn-toolkit2"]
    if found != TOOLKIT:
        raise AttnDeployError(missing_message(f"{python} has rknn-toolkit2 {found}"))
    return answer["versions"]


def check_platform(platform: str, int8: bool = False) -> None:
    """Refuse a platform the toolkit does not build for, and a float build for an NPU that runs INT8 only."""
    if platform not in PLATFORMS:
        raise AttnDeployError(f"--rknn-platform {platform!r} is not one rknn-toolkit2 {TOOLKIT} builds for; use one "
                              f"of {', '.join(PLATFORMS)}")
    if platform in INT8_ONLY and not int8:
        raise AttnDeployError(f"--rknn-platform {platform}: its NPU runs INT8 only; add --int8 with --data or --calib "
                              "(only the INT8 build is written for it)")


def builds_float(options: "RKNNOptions") -> bool:
    """Whether the float build is written: every platform but those whose NPU runs INT8 only."""
    return options.platform not in INT8_ONLY


@dataclass
class RKNNOptions:
    platform: str = "rk3588"
    python: Path | None = None  # the RKNN environment's interpreter (None: $ATTN_DEPLOY_RKNN_PYTHON, else the cache)
    force: bool = False
    algorithm: str = "mmse"  # INT8: how rknn-toolkit2 chooses each range (mmse; normal: min-max; kl_divergence)


def model_dir(onnx_path: Path) -> Path:
    """Where ultralytics looks for an RKNN export of ``onnx_path``."""
    return onnx_path.with_name(f"{onnx_path.stem}_rknn_model")


def int8_source(onnx_path: Path) -> Path:
    """The float ONNX the INT8 build quantizes: ``onnx_path`` with input-relative coordinates."""
    return onnx_path.with_name(f"{onnx_path.stem}_int8.onnx")


def int8_dir(onnx_path: Path) -> Path:
    """Where the INT8 RKNN export of ``onnx_path`` goes (its source, ``int8_source``, beside it)."""
    return model_dir(int8_source(onnx_path))


def ready(options: RKNNOptions, int8: bool = False) -> Path:
    """The interpreter to build with, checked (platform, for a float build or with ``int8`` an INT8 one; the
    environment) before anything is written."""
    check_platform(options.platform, int8)
    python = find_python(options.python)
    probe(python)
    return python


def coordinate_scale(channels: int, metadata: dict) -> np.ndarray | None:
    """Per channel of output0, the input size its pixel coordinates are measured in: (w, h, w, h) for the box, w and h
    for each keypoint's x and y, 1 elsewhere; None for a head whose output0 holds no such channels first (classify,
    end-to-end, RT-DETR). ultralytics' RKNN INT8 layout, which its backend multiplies back (``quantize: 8``)."""
    if metadata.get("task") not in NORMALISED_TASKS or metadata.get("end2end"):
        return None
    h, w = metadata["imgsz"]
    scale = np.ones(channels, np.float32)
    scale[:4] = [w, h, w, h]
    if metadata["task"] == "pose":
        (count, ndim), start = metadata["kpt_shape"], 4 + len(metadata["names"])
        scale[start:start + count * ndim:ndim] = w
        scale[start + 1:start + count * ndim:ndim] = h
    return scale


def normalise_coordinates(source: Path, output: Path) -> bool:
    """Write ``source`` to ``output`` with output0's pixel coordinates divided into input-relative ones, so that one
    int8 scale per tensor keeps the class scores: boxes in pixels reach the input size while scores stay below 1.
    The division goes on the branches that the head's final Concats join (a division after the join would come
    after the join's own quantization). Returns whether the head had coordinates to divide (else a copy)."""
    import onnx

    from .onnx import read_metadata

    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    out = model.graph.output[0]
    scale = coordinate_scale(out.type.tensor_type.shape.dim[1].dim_value, read_metadata(source))
    if scale is not None:
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in [*model.graph.value_info, *model.graph.output]}
        _divide(model.graph, out.name, scale, shapes)
    write_atomic(output, lambda path: onnx.save(model, str(path)))
    return scale is not None


def _divide(graph, tensor: str, scale: np.ndarray, shapes: dict[str, list[int]], consumer=None) -> None:
    """Divide ``tensor``'s channels (axis 1) by ``scale`` where ``consumer`` (default: the graph's output) reads it:
    through the Concats along that axis that produce it, on each input that holds coordinates; else by a Mul."""
    if np.all(scale == 1):
        return
    producer = next((n for n in graph.node if tensor in n.output), None)
    axis = next((a.i for a in producer.attribute if a.name == "axis"), None) if producer is not None else None
    sizes = [shapes.get(name, [])[1:2] for name in producer.input] if producer is not None else []
    if producer is not None and producer.op_type == "Concat" and axis in (1, -2) and all(sizes):
        bounds = np.cumsum([0] + [size[0] for size in sizes])
        for name, begin, end in zip(list(producer.input), bounds, bounds[1:]):
            _divide(graph, name, scale[begin:end], shapes, producer)
        return
    from onnx import helper, numpy_helper

    divisor = f"{tensor}_input_size"
    graph.initializer.append(numpy_helper.from_array((1 / scale).reshape(1, -1, 1).astype(np.float32), divisor))
    if consumer is None:  # the graph's output keeps its name: the producer writes the pixels
        producer.output[:] = [f"{tensor}_pixels" if name == tensor else name for name in producer.output]
        graph.node.append(helper.make_node("Mul", [f"{tensor}_pixels", divisor], [tensor], name=f"{tensor}_divided"))
        return
    divided = f"{tensor}_divided"
    consumer.input[:] = [divided if name == tensor else name for name in consumer.input]
    at = list(graph.node).index(consumer)
    graph.node.insert(at, helper.make_node("Mul", [tensor, divisor], [divided], name=divided))


def head_tensors(onnx_path: Path, levels: int = HEAD_LEVELS) -> list[str]:
    """The graph's outputs and the tensors ``levels`` producers back from them, constants left out: the head's last
    tensors, which an INT8 build keeps in float16."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    found = [o.name for o in graph.output]
    frontier = list(found)
    for _ in range(levels):
        frontier = [i for name in frontier if name in producers for i in producers[name].input
                    if i and i not in constants and i not in found]
        found += list(dict.fromkeys(frontier))
    return found


def spread(paths: list[Path], count: int = CALIBRATION_IMAGES) -> list[Path]:
    """``count`` of ``paths`` spread evenly over them (all when fewer)."""
    step = max(1, len(paths) // count)
    return list(paths)[::step][:count]


def export(onnx_path: Path, output: Path, options: RKNNOptions, calibration: list[Path] | None = None) -> ExportResult:
    """Build ``onnx_path`` for ``options.platform`` into the directory ``output`` with ``metadata.yaml``; atomic.
    With ``calibration`` images, an INT8 build calibrated on ``spread`` of them, whose list stays in the directory
    (``DATASET``: the simulator quantizes again from it)."""
    from .onnx import read_metadata

    check_writable(output, options.force)
    python = ready(options, bool(calibration))
    metadata = read_metadata(onnx_path)
    chosen = spread(calibration) if calibration else []
    quantization = {"quantize": 8, ALGORITHM: options.algorithm, FLOAT: head_tensors(onnx_path)} if chosen else {}
    metadata["args"] = {**metadata.get("args", {}), "name": options.platform, **quantization}
    kept = []

    def write(directory: Path) -> None:
        rknn_file = directory / f"{output.name.removesuffix('_rknn_model')}-{options.platform}.rknn"
        job = {"action": "build", "onnx": str(onnx_path), "platform": options.platform, "output": str(rknn_file)}
        if chosen:
            (directory / DATASET).write_text("".join(f"{Path(p).resolve()}\n" for p in chosen))
            job |= {"dataset": str(directory / DATASET), "algorithm": options.algorithm, "float": quantization[FLOAT]}
        answer = _call(python, job)
        if not answer["ok"]:
            raise AttnDeployError(f"rknn-toolkit2 cannot build {onnx_path.name} for {options.platform}: "
                                  f"{answer['error']}")
        kept.extend(answer.get("kept", []))
        (directory / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))

    started = time.perf_counter()
    write_dir_atomic(output, write)
    kind = (f"INT8, calibrated on {len(chosen)} images, {len(kept)} tensors kept in float16 ({', '.join(kept)})"
            if chosen else "float (the NPU computes in fp16)")
    return ExportResult(output, "rknn", [f"{options.platform}, {kind}; built in {time.perf_counter() - started:.1f} s"])


def _serving(path: Path, metadata: dict, source: Path | None) -> dict:
    """The worker job that builds ``path``'s model again as it was built: from ``source`` (default: the ONNX it was
    built from), quantized from its calibration list where it is INT8."""
    from . import probe_source

    args = metadata.get("args", {})
    job = {"onnx": str(source or probe_source(path)), "platform": args.get("name", "rk3588")}
    return job | ({"dataset": str(path / DATASET), "algorithm": args.get(ALGORITHM, "normal"),
                   "float": args.get(FLOAT, [])} if quantized(metadata) else {})


def quantized(metadata: dict) -> bool:
    return metadata.get("args", {}).get("quantize") == 8


def precision(metadata: dict) -> str:
    """What the NPU computes a build in: int8, or fp16 for a float build."""
    return "int8" if quantized(metadata) else "fp16"


# A float build's layer departs when the cosine of its output against the golden run, fed the golden inputs, falls
# below this; fp16 keeps the layers of the shipped fixtures above 0.9999.
COSINE = 0.999


@dataclass(frozen=True)
class LayerAnalysis:
    """One row of rknn-toolkit2's accuracy analysis: a layer's output tensor, and the cosine of the simulator's value
    against the golden run's, accumulated through the layers before (``entire``) and of the layer alone (``single``),
    as the toolkit writes them: a number, or a marker (``q_inf``: the simulator's output overflowed; ``f_zero``: the
    golden output is all zero)."""

    type: str
    tensor: str
    entire: str
    single: str

    @property
    def module(self) -> str:
        """The module path in the tensor's name: ``/model.10/attn/qkv/Conv_output_0`` is ``model.10.attn.qkv``."""
        return ".".join(part for part in self.tensor.split("/")[:-1] if part)

    @property
    def overflows(self) -> bool:
        return "inf" in self.single

    @property
    def single_cos(self) -> float:
        """The single-layer cosine; 1 where the toolkit wrote none (an all-zero golden output)."""
        try:
            return float(self.single)
        except ValueError:
            return 1.0

    @property
    def departs(self) -> bool:
        return self.overflows or self.single_cos < COSINE

    def describe(self) -> str:
        said = "overflows in the simulator" if self.overflows else f"cosine {self.single_cos:.5f}"
        return f"{self.type} {self.tensor} in {self.module or '-'} ({said})"


def analyse(path: Path, x: np.ndarray, python: Path | None = None) -> list[LayerAnalysis]:
    """rknn-toolkit2's per-layer accuracy analysis of the RKNN artefact at ``path`` on ``x`` (its first image, NCHW in
    [0, 1]), built again from the ONNX it was built from, in the simulator."""
    from . import artefact_metadata

    path = Path(path)
    job = _serving(path, artefact_metadata(path), None)
    platform = job["platform"]
    with tempfile.TemporaryDirectory(prefix="attn-deploy-rknn-") as tmp:
        image = Path(tmp) / "x.npy"
        np.save(image, np.ascontiguousarray(x[:1], dtype=np.float32))
        answer = _call(find_python(python), {"action": "analyse", **job, "input": str(image), "output_dir": tmp})
    if not answer["ok"]:
        raise AttnDeployError(f"rknn-toolkit2's accuracy analysis of the {platform} build failed: {answer['error']}")
    return [LayerAnalysis(**row) for row in answer["layers"]]


def departure(layers: list[LayerAnalysis]) -> str:
    """What the analysis says, in one line: the first layer whose output departs on its own (below ``COSINE``, or
    overflowing), and the lowest cosine."""
    if not layers:
        return "rknn-toolkit2's accuracy analysis compared no layer"
    first = next((layer for layer in layers if layer.departs), None)
    if first:
        said = f"first departing on its own: {first.describe()}"
    else:
        said = (f"no layer below cosine {COSINE:g} on its own (lowest: "
                f"{min(layers, key=lambda layer: layer.single_cos).describe()})")
    return (f"rknn-toolkit2's accuracy analysis ({len(layers)} layers against its fp32 golden run): {said}; output "
            f"cosine {layers[-1].entire}")


def in_pixels(outputs: list[np.ndarray], metadata: dict) -> list[np.ndarray]:
    """``outputs`` with an INT8 build's input-relative coordinates multiplied back into pixels."""
    scale = coordinate_scale(outputs[0].shape[1], metadata) if quantized(metadata) else None
    return outputs if scale is None else [outputs[0] * scale.reshape(1, -1, 1), *outputs[1:]]


def open_runner(path: Path):
    """On a Rockchip board (rknn-toolkit-lite2 installed), the NPU itself; elsewhere the toolkit's simulator."""
    import importlib.util

    return BoardRunner(path) if importlib.util.find_spec("rknnlite") else Runner(path)


class BoardRunner:
    """Runs an RKNN artefact on the board's NPU through rknn-toolkit-lite2, in this process: what ``tune``'s job times
    where a board is (``python -m attn_deploy.bench.job`` on the board, with attn-deploy and rknn-toolkit-lite2)."""

    backend = "rknn"
    device = "npu"

    def __init__(self, path: Path):
        from rknnlite.api import RKNNLite

        from . import artefact_metadata

        self.metadata = artefact_metadata(Path(path))
        self.precision = precision(self.metadata)
        self.lite = RKNNLite(verbose=False)
        model = next(Path(path).glob("*.rknn"))
        if self.lite.load_rknn(str(model)) != 0 or self.lite.init_runtime() != 0:
            raise AttnDeployError(f"rknn-toolkit-lite2 cannot load {model} on this board's NPU")

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        images = [np.ascontiguousarray(x.transpose(0, 2, 3, 1) * 255.0, dtype=np.float32) for x in inputs]
        outputs = self.lite.inference(inputs=images, data_format="nhwc")
        return in_pixels([np.asarray(o, dtype=np.float32) for o in outputs], self.metadata)

    def close(self) -> None:
        self.lite.release()


class Runner:
    """Runs an RKNN artefact in rknn-toolkit2's x86 simulator, in a worker process of the RKNN environment.

    Inputs are float NCHW images in [0, 1], as every runner takes; the worker hands the model pixels in [0, 255].
    ``source``: the ONNX to build (default: the one the artefact was built from; localisation passes one with the
    blocks' outputs exposed). An INT8 build is quantized again from its calibration list, and its input-relative
    coordinates are multiplied back into pixels, as ultralytics' backend does."""

    backend = "rknn-simulator"
    device = "x86 simulator"
    untimed = "rknn-toolkit2's x86 simulator is not a timing device: time the .rknn on the board (rknn-toolkit-lite2)"

    def __init__(self, path: Path, python: Path | None = None, source: Path | None = None):
        from . import artefact_metadata

        path = Path(path)
        self.metadata = artefact_metadata(path)
        self.platform = self.metadata.get("args", {}).get("name", "rk3588")
        self.precision = precision(self.metadata)
        self.imgsz = tuple(self.metadata.get("imgsz", (640, 640)))
        self.batch = int(self.metadata.get("batch", 1))
        self.input_shape = [self.batch, 3, *self.imgsz]
        python = find_python(python)
        self.version = probe(python)["rknn-toolkit2"]
        self.tmp = tempfile.TemporaryDirectory(prefix="attn-deploy-rknn-")
        self.process = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self._ask({"action": "serve", **_serving(path, self.metadata, source)})
        self.runs = 0

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        answer = json.loads(line) if line.strip() else {"ok": False, "error": "the worker ended without answering"}
        if not answer["ok"]:
            self.close()
            raise AttnDeployError(f"the RKNN simulator cannot run the {self.platform} build: {answer['error']}")
        return answer

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        paths = []
        for i, x in enumerate(inputs):
            paths.append(os.path.join(self.tmp.name, f"in{i}.npy"))
            np.save(paths[-1], np.ascontiguousarray(x, dtype=np.float32))
        answer = self._ask({"inputs": paths, "outputs": self.tmp.name})
        self.runs += 1
        return in_pixels([np.load(p) for p in answer["outputs"]], self.metadata)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        self.tmp.cleanup()


def setup(env: Path | None = None, torch_index: str | None = None, force: bool = False) -> tuple[Path, dict]:
    """Create the RKNN environment at ``env`` (default: the cache's): a venv with ``PINS`` and the CPU torch wheel,
    each without dependency resolution. Built beside and moved into place, so a failed setup leaves nothing; a
    working one already there is kept unless ``force``. Returns its interpreter and versions."""
    env = Path(env or default_env())
    if env.exists() and not force:  # set up already: kept when it works, so running setup twice costs nothing
        try:
            return _interpreter(env), probe(_interpreter(env))
        except AttnDeployError as e:
            raise AttnDeployError(f"{env} exists but is not a working RKNN environment; pass --force to create it "
                                  f"again ({e})") from None
    build = env.with_name(f".{env.name}.building")
    shutil.rmtree(build, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(build)], check=True, capture_output=True)
        _pip(build, "--no-deps", *PINS)
        _pip(build, "--no-deps", TORCH, *(["--index-url", torch_index] if torch_index else []))
        versions = probe(_interpreter(build))
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    shutil.rmtree(env, ignore_errors=True)
    build.rename(env)
    return _interpreter(env), versions


def _pip(env: Path, *args: str) -> None:
    """pip of the running interpreter installing into ``env`` (the new venv has no pip of its own)."""
    command = [sys.executable, "-m", "pip", "--python", str(_interpreter(env)), "install", "--quiet", "--no-compile",
               *args]  # no byte-compiling of all torch: the worker imports a small part of it
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        tail = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        raise AttnDeployError(f"pip could not install the RKNN environment: {(tail or ['?'])[-1][:300]}")
