"""RKNN (Rockchip NPUs): build an ONNX export with rknn-toolkit2 and run it in the toolkit's x86 simulator.

rknn-toolkit2's pins conflict with attn-deploy's environment, so it lives in an environment of its own and runs
behind a process boundary: ``rknn_worker.py`` beside this file, started with that environment's interpreter, files
and JSON in and out. This module never imports rknn. ``attn-deploy setup rknn`` creates the environment in the
user's cache; ``--rknn-python`` (or ``ATTN_DEPLOY_RKNN_PYTHON``) names one the user made.

The artefact is ``<stem>_rknn_model/`` as ultralytics lays it out: ``<stem>-<platform>.rknn`` and
``metadata.yaml``. The model takes NHWC pixels in [0, 255] (it divides by 255 itself). The NPU computes in fp16,
so a float build is judged at fp16's tolerance. The simulator runs only models built in its own process, so the
runner builds again from the ONNX beside the artefact (``<stem>.onnx``, the file the build read).
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
from ..files import check_writable, write_dir_atomic
from . import ExportResult

WORKER = Path(__file__).with_name("rknn_worker.py")
TOOLKIT = "2.3.2"  # 2.5.0 cannot build YOLOv8's DFL conv; ultralytics pins >=2.3.2,<2.5 for the same reason
# Every target_platform rknn-toolkit2 2.3.2's config accepts (each checked); the RV1103/RV1106 NPUs run INT8 only.
PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rk2118", "rv1126b", "rv1103", "rv1106", "rv1103b",
             "rv1106b")
INT8_ONLY = frozenset({"rv1103", "rv1106", "rv1103b", "rv1106b"})
ENV_VAR = "ATTN_DEPLOY_RKNN_PYTHON"

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


def check_platform(platform: str) -> None:
    if platform not in PLATFORMS:
        raise AttnDeployError(f"--rknn-platform {platform!r} is not one rknn-toolkit2 {TOOLKIT} builds for; use one "
                              f"of {', '.join(PLATFORMS)}")
    if platform in INT8_ONLY:
        raise AttnDeployError(f"--rknn-platform {platform}: its NPU runs INT8 only, and attn-deploy builds float RKNN "
                              "models only so far; choose a platform with a float NPU (rk3588, rk3576, rk3568, "
                              "rk3566, rk3562, rk2118, rv1126b)")


@dataclass
class RKNNOptions:
    platform: str = "rk3588"
    python: Path | None = None  # the RKNN environment's interpreter (None: $ATTN_DEPLOY_RKNN_PYTHON, else the cache)
    force: bool = False


def model_dir(onnx_path: Path) -> Path:
    """Where ultralytics looks for an RKNN export of ``onnx_path``."""
    return onnx_path.with_name(f"{onnx_path.stem}_rknn_model")


def ready(options: RKNNOptions) -> Path:
    """The interpreter to build with, checked (platform, environment) before anything is written."""
    check_platform(options.platform)
    python = find_python(options.python)
    probe(python)
    return python


def export(onnx_path: Path, output: Path, options: RKNNOptions) -> ExportResult:
    """Build ``onnx_path`` for ``options.platform`` into the directory ``output`` with ``metadata.yaml``; atomic."""
    from .onnx import read_metadata

    check_writable(output, options.force)
    python = ready(options)
    metadata = read_metadata(onnx_path)
    metadata["args"] = {**metadata.get("args", {}), "name": options.platform}

    def write(directory: Path) -> None:
        rknn_file = directory / f"{output.name.removesuffix('_rknn_model')}-{options.platform}.rknn"
        job = {"action": "build", "onnx": str(onnx_path), "platform": options.platform, "output": str(rknn_file)}
        answer = _call(python, job)
        if not answer["ok"]:
            raise AttnDeployError(f"rknn-toolkit2 cannot build {onnx_path.name} for {options.platform}: "
                                  f"{answer['error']}")
        (directory / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))

    started = time.perf_counter()
    write_dir_atomic(output, write)
    return ExportResult(output, "rknn", [f"{options.platform}, float (the NPU computes in fp16); built in "
                                         f"{time.perf_counter() - started:.1f} s"])


class Runner:
    """Runs an RKNN artefact in rknn-toolkit2's x86 simulator, in a worker process of the RKNN environment.

    Inputs are float NCHW images in [0, 1], as every runner takes; the worker hands the model pixels in [0, 255].
    ``source``: the ONNX to build (default: the one the artefact was built from; localisation passes one with the
    blocks' outputs exposed)."""

    backend = "rknn-simulator"
    device = "x86 simulator"

    def __init__(self, path: Path, python: Path | None = None, source: Path | None = None):
        from . import artefact_metadata, probe_source

        path = Path(path)
        self.metadata = artefact_metadata(path)
        self.platform = self.metadata.get("args", {}).get("name", "rk3588")
        self.precision = "fp16"
        self.imgsz = tuple(self.metadata.get("imgsz", (640, 640)))
        self.batch = int(self.metadata.get("batch", 1))
        self.input_shape = [self.batch, 3, *self.imgsz]
        python = find_python(python)
        self.version = probe(python)["rknn-toolkit2"]
        self.tmp = tempfile.TemporaryDirectory(prefix="attn-deploy-rknn-")
        self.process = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self._ask({"action": "serve", "onnx": str(source or probe_source(path)), "platform": self.platform})
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
        return [np.load(p) for p in answer["outputs"]]

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
