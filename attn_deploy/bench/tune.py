"""``attn-deploy tune``: the fastest artefact that still computes what the original model computes, on this machine.

The export pipeline builds every artefact once (ONNX fp32, the mixed fp16 ONNX, OpenVINO IR and, with a data set,
the Q/DQ INT8 ONNX and the NNCF INT8 IR; TensorRT engines where TensorRT runs), and ultralytics' own exporter builds
the baseline users start from. Each candidate, an artefact on a runtime at a precision with its thread and stream
settings, is a job (``bench.job``): checked against the original model at its precision's tolerance (and with a
data set its mAP50-95 drop within the budget), then timed, one live runtime at a time. The fastest candidate that
passes, by its median latency, is copied beside the checkpoint under a stable name with a JSON record of how it was
chosen and how to run it.

Candidates run in a fixed order: the two references first (ultralytics' ONNX export and attn-deploy's fp32 ONNX, in
onnxruntime), always; then those that are usually fastest on the device, so that a short ``budget_s`` still
reaches them. A candidate starts only while the budget lasts; those not reached are listed as skipped.
"""

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..accuracy import MAP_TOLERANCES
from ..data import load_split
from ..errors import AttnDeployError
from ..files import check_writable, write_atomic, write_dir_atomic
from ..parity import TOLERANCES
from .harness import Budget, LatencyStats, ratio_of_medians
from .job import Context, Job, JobResult, Settings, run_job

MAP_BUDGET = 0.005  # the largest mAP50-95 drop a recommendation may cost, whatever its precision
# The two references run whatever the budget: the speed-ups and the reason line refer to them.
BASELINE, REFERENCE = "ultralytics onnx (baseline)", "onnxruntime fp32"
STABLE = {"onnxruntime": ".tuned.onnx", "openvino": ".tuned_openvino_model", "tensorrt": ".tuned.engine",
          "torch": ".tuned.pt", "ncnn": ".tuned_ncnn_model"}  # the recommended artefact's name beside the checkpoint
DISPLAY = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO", "tensorrt": "TensorRT", "torch": "PyTorch",
           "ncnn": "ncnn", "rknn": "RKNN"}
Progress = Callable[[str, int, int], None]
Step = Callable[[str], object]


@dataclass
class Request:
    """What to tune for: the input size, how to judge (tolerances, data, mAP budget) and how long to time."""

    imgsz: tuple[int, int]
    data: Path | None = None  # a data YAML: mAP50-95 of every candidate; INT8 candidates need it
    calib: Path | None = None  # INT8 calibration images (default: the data YAML's train split)
    map_budget: float = MAP_BUDGET
    budget_s: float | None = None  # seconds for the search, after the artefacts are built
    timing: Budget = field(default_factory=Budget)
    threads: int | None = None  # None: every logical core, and the physical cores where that differs
    tolerances: dict = field(default_factory=lambda: dict(TOLERANCES))
    map_tolerances: dict = field(default_factory=lambda: dict(MAP_TOLERANCES))
    loading: dict = field(default_factory=dict)  # keyword arguments of ``loading.load``, for jobs run elsewhere
    force: bool = False  # replace an earlier recommendation
    rknn: object | None = None  # exporters.rknn.RKNNOptions: build for that NPU too, verified in the simulator


@dataclass
class Candidate:
    """One job and what it found (or why it did not run), with the verdicts ``tune`` derives across candidates."""

    name: str
    backend: str
    path: str
    settings: Settings
    job: Job
    precision: str | None = None  # the inference precision it was timed and checked at
    parity: str = "not run"
    parity_detail: str = ""
    passed: bool = False  # parity at its precision's tolerance and the mAP budget
    failed: str = ""  # why it did not pass
    map50_95: float | None = None
    map50_95_drop: float | None = None  # positive: worse than the original PyTorch model
    latency_ms: float | None = None  # the median
    latency: LatencyStats | None = None
    throughput: float | None = None
    runtime: dict = field(default_factory=dict)
    error: str | None = None
    node: str = ""  # where it ran
    device: str = ""
    reused: bool = False  # its result came from an earlier cluster run's store
    skipped: str | None = None  # why it did not run
    untimed: str = ""  # why it was verified but not timed (RKNN's simulator)
    baseline: bool = False  # ultralytics' own ONNX export: compared against, never recommended
    pareto: list[str] = field(default_factory=list)  # the fronts it lies on: latency, throughput (against mAP)
    speedup: tuple[float, float, float] | None = None  # the baseline's median over its own, with a 95 % interval

    @classmethod
    def of(cls, job: Job, result: JobResult | None = None, skipped: str | None = None,
           baseline: bool = False) -> "Candidate":
        found = cls(job.name, job.backend, job.artefact, job.settings, job, skipped=skipped, baseline=baseline)
        if result is None:
            return found
        stats = result.latency_ms
        return dataclasses.replace(
            found, precision=result.precision, parity=result.parity, parity_detail=result.parity_detail,
            passed=result.passed, failed=result.failed, map50_95=result.map50_95, map50_95_drop=result.map50_95_drop,
            latency_ms=stats.median if stats else None, latency=stats, throughput=result.throughput,
            runtime=result.runtime, error=result.error, node=result.node, device=result.device, reused=result.reused,
            untimed=result.untimed)

    @property
    def label(self) -> str:
        """``OpenVINO INT8+BF16 (latency hint, 2 threads)``: what the reason line and the plots call it."""
        how = [f"{self.settings.mode} hint" if self.backend == "openvino" else self.settings.mode,
               f"{self.settings.threads} threads" if self.settings.threads else ""]
        details = ", ".join(h for h in how if h)
        return f"{DISPLAY[self.backend]} {(self.precision or self.settings.precision).upper()}" + (
            f" ({details})" if details else "")


@dataclass
class Recommendation:
    """The fastest candidate that passed, as written beside the checkpoint."""

    path: Path  # the artefact under its stable name
    metadata: Path  # the JSON record beside it
    name: str
    backend: str
    precision: str
    settings: Settings
    runtime: dict
    latency_ms: float
    throughput: float
    map50_95: float | None
    map50_95_drop: float | None
    speedup: tuple[float, float, float] | None  # against ultralytics' ONNX export, with a 95 % interval
    reason: str
    config: dict  # the session or compile options it was timed with: what to pass to run it as fast


@dataclass
class Tune:
    checkpoint: Path
    imgsz: tuple[int, int]
    request: Request
    candidates: list[Candidate] = field(default_factory=list)
    recommended: Recommendation | None = None
    notes: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    build_s: float = 0.0
    search_s: float = 0.0


def stable_paths(checkpoint: Path) -> dict[str, Path]:
    """Where each backend's recommended artefact goes: beside the checkpoint, under a name that ultralytics reads."""
    return {backend: checkpoint.with_name(checkpoint.stem + suffix) for backend, suffix in STABLE.items()}


def metadata_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(f"{checkpoint.stem}.tuned.json")


def check_outputs(checkpoint: Path, force: bool) -> None:
    """Refuse to replace an earlier recommendation unasked, before any work."""
    for path in [*stable_paths(checkpoint).values(), metadata_path(checkpoint)]:
        check_writable(path, force)


def _cpu_default_precision() -> str:
    """The precision OpenVINO's CPU plugin computes in when no hint is given: bf16 on AVX512-BF16 or AMX CPUs."""
    import openvino as ov

    from ..exporters.openvino import PRECISIONS

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return PRECISIONS.get(hint.get_type_name(), hint.get_type_name())


def thread_choices(threads: int | None) -> list[int]:
    """The thread counts worth trying: the one asked for, else every logical core and the physical cores."""
    import psutil

    if threads:
        return [threads]
    return sorted({os.cpu_count() or 1, psutil.cpu_count(logical=False) or os.cpu_count() or 1}, reverse=True)


def build(loaded, request: Request, workdir: Path, step: Step) -> tuple[dict[str, Path], str, list[str]]:
    """Every artefact the candidates run, by kind; the rewrite's reference semantics; notes for the report."""
    from .. import pipeline
    from ..exporters import onnx, openvino, tensorrt

    stem = loaded.source.stem
    int8 = request.data is not None
    plan = pipeline.Plan(["onnx", "openvino"], workdir / f"{stem}.onnx", onnx.OnnxOptions(request.imgsz, force=True),
                         half=True, openvino_half=False, tolerances=request.tolerances, int8=int8,
                         calib=request.calib or request.data, trt_qdq=tensorrt.missing() is None)
    built = pipeline.build(loaded, plan, step)
    paths = {"onnx": plan.output, "onnx-fp16": plan.fp16_onnx, "openvino": openvino.model_dir(plan.output)}
    if int8:
        paths.update({"onnx-int8": plan.int8_onnx, "openvino-int8": openvino.int8_dir(plan.output)})
    notes = [f"lint for {r.target}: " + "; ".join(f"{f.check}: {f.detail}" for f in r.findings)
             for r in built.lint if not r.passed]
    try:
        with step("Exporting the baseline with ultralytics' own ONNX exporter"):
            paths["ultralytics"] = onnx.export_with_ultralytics(loaded, workdir / "ultralytics" / f"{stem}.onnx",
                                                                request.imgsz, force=True).path
    except AttnDeployError as e:  # what users start from fails: the candidates still stand against each other
        notes.append(f"no baseline: {e}")
    if tensorrt.missing() is None:
        calibration = pipeline.calibration_paths(plan)
        for precision in ("fp32", "fp16", "int8")[:3 if int8 else 2]:
            paths[f"trt-{precision}"] = pipeline.build_trt(plan, calibration, step, precision,
                                                           workdir / f"{stem}.{precision}.engine").path
    else:
        notes.append(f"TensorRT candidates not tried: {tensorrt.missing()}")
    notes += _build_ncnn(loaded, request, workdir, step, paths)
    notes += build_rknn(loaded, request, workdir, step, paths) if request.rknn else []
    return paths, built.rewrite.reference if built.rewrite else "eager", notes


def _build_ncnn(loaded, request: Request, workdir: Path, step: Step, paths: dict[str, Path]) -> list[str]:
    """The ncnn model, from an export of its own (ncnn's rules keep attention windows off the batch axis); notes."""
    from .. import pipeline
    from ..exporters import ncnn, onnx

    if ncnn.missing():
        return [f"ncnn candidates not tried: {ncnn.missing()}"]
    plan = pipeline.Plan(["ncnn"], workdir / "ncnn" / f"{loaded.source.stem}.onnx",
                         onnx.OnnxOptions(request.imgsz, force=True), tolerances=request.tolerances)
    try:
        pipeline.build(loaded, plan, step)
    except AttnDeployError as e:
        return [f"no ncnn candidates: {e}"]
    paths["ncnn"] = ncnn.model_dir(plan.output)
    return []


def build_rknn(loaded, request: Request, workdir: Path, step: Step, paths: dict[str, Path]) -> list[str]:
    """The RKNN builds (float, and INT8 with a data set), from an export of their own; notes."""
    from .. import pipeline
    from ..exporters import onnx, rknn

    plan = pipeline.Plan(["rknn"], workdir / "rknn" / f"{loaded.source.stem}.onnx",
                         onnx.OnnxOptions(request.imgsz, force=True), tolerances=request.tolerances,
                         int8=request.data is not None, calib=request.calib or request.data,
                         rknn=dataclasses.replace(request.rknn, force=True))
    try:
        pipeline.build(loaded, plan, step)
    except AttnDeployError as e:
        return [f"no RKNN candidates: {e}"]
    if rknn.builds_float(request.rknn):
        paths["rknn"] = rknn.model_dir(plan.output)
    if plan.int8:
        paths["rknn-int8"] = rknn.int8_dir(plan.output)
    return []


# (name, backend, artefact kind, mode, precision asked of the runtime) in the order they run after the references.
# ncnn: "fp16" is fp16 storage and arithmetic, "bf16" bf16 storage; "unpacked" turns its packing layout off.
CPU_LATENCY = [
    ("openvino int8 default latency", "openvino", "openvino-int8", "latency", "default"),
    ("openvino int8 latency", "openvino", "openvino-int8", "latency", "fp32"),
    ("openvino default latency", "openvino", "openvino", "latency", "default"),
    ("openvino fp32 latency", "openvino", "openvino", "latency", "fp32"),
    ("ncnn fp16", "ncnn", "ncnn", "", "fp16"),
    ("ncnn bf16", "ncnn", "ncnn", "", "bf16"),
    ("ncnn fp32", "ncnn", "ncnn", "", "fp32"),
    ("onnxruntime int8", "onnxruntime", "onnx-int8", "", "fp32"),
    ("onnxruntime fp16", "onnxruntime", "onnx-fp16", "", "fp32"),
    (REFERENCE, "onnxruntime", "onnx", "", "fp32"),
]
CPU_ONCE = [
    ("torch eager", "torch", "checkpoint", "eager", "fp32"),
    ("openvino int8 default throughput", "openvino", "openvino-int8", "throughput", "default"),
    ("openvino int8 throughput", "openvino", "openvino-int8", "throughput", "fp32"),
    ("openvino default throughput", "openvino", "openvino", "throughput", "default"),
    ("openvino fp32 throughput", "openvino", "openvino", "throughput", "fp32"),
    ("ncnn fp32 unpacked", "ncnn", "ncnn", "unpacked", "fp32"),
]
# Verified in rknn-toolkit2's simulator, not timed (it is no timing device); with --rknn-platform.
RKNN = [
    ("rknn fp16", "rknn", "rknn", "", "fp16"),
    ("rknn int8", "rknn", "rknn-int8", "", "int8"),
]
CUDA = [
    ("tensorrt int8", "tensorrt", "trt-int8", "", "int8"),
    ("tensorrt fp16", "tensorrt", "trt-fp16", "", "fp16"),
    ("tensorrt fp32", "tensorrt", "trt-fp32", "", "fp32"),
    ("torch cuda-graph fp16", "torch", "checkpoint", "cuda-graph", "fp16"),
    ("torch eager fp16 cuda", "torch", "checkpoint", "eager", "fp16"),
    ("torch cuda-graph fp32", "torch", "checkpoint", "cuda-graph", "fp32"),
    ("torch eager fp32 cuda", "torch", "checkpoint", "eager", "fp32"),
]


def _specs(threads: list[int], cuda: bool, rknn: bool = False) -> list[tuple[str, str, str, Settings]]:
    """(name, backend, artefact kind, settings) of every candidate after the references, in the order they run."""
    specs = [(name, backend, kind, Settings(None, mode, precision, "cuda")) for name, backend, kind, mode, precision
             in CUDA] if cuda else []
    for i, t in enumerate(threads):
        suffix = f" {t} threads" if len(threads) > 1 else ""
        specs += [(name + suffix, backend, kind, Settings(t, mode, precision))
                  for name, backend, kind, mode, precision in CPU_LATENCY if i or name != REFERENCE]
    return specs + [(name, backend, kind, Settings(threads[0], mode, precision))
                    for name, backend, kind, mode, precision in CPU_ONCE + (RKNN if rknn else [])]


def _skip_reason(kind: str, settings: Settings, paths: dict[str, Path], bf16: bool) -> str | None:
    if kind not in paths and "int8" in kind:
        return "INT8 is judged by its mAP: pass --data"
    if kind not in paths:
        return f"no {kind} artefact was built" + (" (see the notes)" if kind in ("ncnn", "rknn") else "")
    if settings.precision == "default" and not bf16:
        return "OpenVINO's CPU default precision is f32 here (no AVX512-BF16 or AMX): the fp32 candidate covers it"
    return None


def plan_jobs(checkpoint: Path, paths: dict[str, Path], semantics: str, request: Request,
              cuda: bool, bf16: bool) -> tuple[list[Job], list[Candidate]]:
    """The jobs to run (the baseline first, then attn-deploy's onnxruntime fp32 export, then the rest in order), and
    the candidates that cannot run here, skipped with the reason."""
    threads = thread_choices(request.threads)
    paths = {**paths, "checkpoint": checkpoint}

    def job(name: str, backend: str, kind: str, settings: Settings) -> Job:
        return Job(name, backend, str(paths[kind]) if kind in paths else "", str(checkpoint), request.imgsz, settings,
                   request.timing, request.loading, semantics, request.tolerances,
                   str(request.data) if request.data else None, request.map_tolerances, request.map_budget)

    jobs = [job(BASELINE, "onnxruntime", "ultralytics", Settings(threads[0]))] if "ultralytics" in paths else []
    jobs.append(job(REFERENCE, "onnxruntime", "onnx", Settings(threads[0])))
    skipped = []
    for name, backend, kind, settings in _specs(threads, cuda, request.rknn is not None):
        reason = _skip_reason(kind, settings, paths, bf16)
        if reason:
            skipped.append(Candidate.of(job(name, backend, kind, settings), skipped=reason))
        else:
            jobs.append(job(name, backend, kind, settings))
    return jobs, skipped


def search(jobs: list[Job], budget_s: float | None, context: Context | None = None,
           progress: Progress | None = None, cluster=None) -> list[Candidate]:
    """Run ``jobs`` one at a time; once ``budget_s`` seconds are spent only the baseline and the reference (the
    onnxruntime fp32 export) still start. On a ``cluster`` (``cluster.dispatch.Cluster``) every job runs, each on a
    node that has its device, one job per device at a time."""
    if cluster is not None:
        return [Candidate.of(job, result, baseline=job.name == BASELINE)
                for job, result in zip(jobs, cluster.run(jobs, progress))]
    context = context or Context()
    started, found = time.perf_counter(), []
    for i, job in enumerate(jobs):
        spent = time.perf_counter() - started
        if job.name not in (BASELINE, REFERENCE) and budget_s is not None and spent >= budget_s:
            found.append(Candidate.of(job, skipped=f"not reached: --budget-s {budget_s:g} was spent after "
                                                   f"{spent:.0f} s"))
            continue
        if progress:
            progress(f"{job.name}: parity, mAP, timing", i, len(jobs))
        found.append(Candidate.of(job, run_job(job, context), baseline=job.name == BASELINE))
    if progress:
        progress("done", len(jobs), len(jobs))
    return found


def front(points: list[tuple[float, float]]) -> list[bool]:
    """Which points no other point dominates, both coordinates higher-is-better."""
    return [not any(a >= x and b >= y and (a, b) != (x, y) for a, b in points) for x, y in points]


def mark_fronts(candidates: list[Candidate]) -> None:
    """Mark the passing candidates on the Pareto fronts of latency (lower) and throughput (higher) against mAP50-95."""
    scored = [c for c in candidates if c.passed and c.map50_95 is not None and c.latency_ms]
    for axis, value in (("latency", lambda c: -c.latency_ms), ("throughput", lambda c: c.throughput)):
        for c, on in zip(scored, front([(value(c), c.map50_95) for c in scored])):
            if on:
                c.pareto.append(axis)


def recommend(candidates: list[Candidate]) -> Candidate | None:
    """The passing candidate with the lowest median latency; the baseline is compared against, not recommended."""
    return min((c for c in candidates if c.passed and not c.baseline and c.latency_ms),
               key=lambda c: c.latency_ms, default=None)


def _speedups(candidates: list[Candidate]) -> None:
    base = next((c for c in candidates if c.baseline and c.latency), None)
    for c in candidates:
        if base and c.latency:
            c.speedup = ratio_of_medians(base.latency, c.latency)


def reason(best: Candidate, candidates: list[Candidate]) -> str:
    """``OpenVINO INT8+BF16 (latency hint, 2 threads), 2.9x the onnxruntime fp32 export at -0.002 mAP50-95; ...``."""
    reference = next((c for c in candidates if c.name == REFERENCE and c.latency), None)
    accuracy = ("at an unscored mAP (no --data)" if best.map50_95_drop is None
                else f"at {-best.map50_95_drop:+.3f} mAP50-95")
    text = best.label + (f", {reference.latency_ms / best.latency_ms:.1f}x the onnxruntime fp32 export"
                         if reference else "") + f" {accuracy}"
    if best.speedup:
        value, low, high = best.speedup
        text += f"; {value:.2f}x [{low:.2f}, {high:.2f}] ultralytics' own ONNX export in onnxruntime"
    return text


def run_config(settings: Settings, backend: str) -> dict:
    """The options a user passes to run the artefact as it was timed: OpenVINO's compile config, onnxruntime's
    session threads, ncnn's ``net.opt`` fields, torch's threads."""
    from ..exporters import ncnn, openvino

    if backend == "openvino":
        precision = None if settings.precision == "default" else "fp32"
        return openvino.compile_config(precision, settings.threads, settings.mode)
    if backend == "ncnn":
        return ncnn.options(ncnn.NcnnSettings(settings.precision, settings.mode != "unpacked"), settings.threads)
    if backend == "onnxruntime":
        return {"intra_op_num_threads": settings.threads, "inter_op_num_threads": 1} if settings.threads else {}
    return {"torch.set_num_threads": settings.threads} if backend == "torch" and settings.threads else {}


def _copy(source: Path, target: Path) -> Path:
    if source.is_dir():
        return write_dir_atomic(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
    return write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def write_recommended(best: Candidate, candidates: list[Candidate], checkpoint: Path, machine: dict) -> Recommendation:
    """Copy the winning artefact beside the checkpoint under its backend's stable name (atomically; an earlier
    recommendation of another backend is removed), with a JSON record of how it was chosen and is to be run."""
    targets = stable_paths(checkpoint)
    found = Recommendation(targets[best.backend], metadata_path(checkpoint), best.name, best.backend, best.precision,
                           best.settings, best.runtime, best.latency_ms, best.throughput, best.map50_95,
                           best.map50_95_drop, best.speedup, reason(best, candidates),
                           run_config(best.settings, best.backend))
    _copy(Path(best.path), found.path)
    for backend, stale in targets.items():
        if backend != best.backend and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    record = {**dataclasses.asdict(found), "checkpoint": checkpoint, "machine": machine}
    write_atomic(found.metadata, lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str) + "\n"))
    return found


def run(loaded, request: Request, step: Step, progress: Progress | None = None,
        workdir: Path | None = None, cluster=None) -> Tune:
    """Build, try every candidate (here, or on ``cluster``), and write the fastest that passes beside the checkpoint.
    Artefacts are built in ``workdir`` (kept) or a temporary directory (removed)."""
    import torch

    from ..machine import machine

    checkpoint = Path(loaded.source)
    check_outputs(checkpoint, request.force)
    loaded.check_input(request.imgsz, 1)
    if request.calib and not request.data:
        raise AttnDeployError("--calib calibrates the INT8 candidates, which are judged by their mAP: pass --data too")
    if request.data:
        load_split(request.data)  # a bad --data fails here, before anything is built
    if request.rknn:
        from ..exporters import rknn

        rknn.ready(request.rknn, request.data is not None)  # so do a bad platform and a missing RKNN environment
    result = Tune(checkpoint, request.imgsz, request, machine=machine(thread_choices(request.threads)[0]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        started = time.perf_counter()
        paths, semantics, result.notes = build(loaded, request, work, step)
        cuda = cluster.offers("dev_cuda") if cluster else torch.cuda.is_available()
        result.notes += [] if cuda else ["torch CUDA candidates not tried: " + (
            "no node of the cluster offers a CUDA device" if cluster else "torch sees no CUDA device here")]
        jobs, skipped = plan_jobs(checkpoint, paths, semantics, request, cuda, _cpu_default_precision() != "fp32")
        result.build_s, started = time.perf_counter() - started, time.perf_counter()
        result.candidates = search(jobs, request.budget_s, Context({str(checkpoint): loaded}), progress,
                                   cluster) + skipped
        if cluster:
            from ..cluster import where

            result.notes.append(f"on the cluster: {where(result.candidates)}")
        result.search_s = time.perf_counter() - started
        _speedups(result.candidates)
        mark_fronts(result.candidates)
        best = recommend(result.candidates)
        if best:
            result.recommended = write_recommended(best, result.candidates, checkpoint, result.machine)
    return result
