"""The bench plan: every model on every backend variant at every batch, timed by ``bench`` and profiled per op.

A model is a checkpoint (exported on the fly to the backends asked for) or an exported artefact (run by its
own backend). ``Subject`` is what one model offers the runners; ``Variant`` is one way of running it.
"""

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from .harness import BenchResult, Budget, bench, peak_rss_mb, reset_peak_rss, seeded_input, variant_label
from .job import Job, Settings
from ..errors import AttnDeployError
from .profile import OpProfile, profile

BACKENDS = {"torch": "torch", "ort": "onnxruntime", "openvino": "openvino", "trt": "tensorrt", "ncnn": "ncnn",
            "opencv": "opencv"}
# Run only when asked for by name: ncnn takes one image at a time (the default batches are 1, 8, 32); OpenCV reruns
# the ONNX file.
OPT_IN = ("ncnn", "opencv")
SHARES = {"opencv": "onnxruntime"}  # backends that run another backend's artefact: OpenCV's DNN reads the ONNX file
PROFILED = ("onnxruntime", "openvino")
# exporters.backend_of -> runner
ARTEFACT_BACKEND = {"onnx": "onnxruntime", "openvino": "openvino", "trt": "tensorrt", "ncnn": "ncnn"}
BATCHES = [1, 8, 32]  # a checkpoint's, or a dynamic export's, when no batch is asked for
Progress = Callable[[str, int, int], None]  # (what is running, jobs done, jobs in all)
Step = Callable[[str], contextlib.AbstractContextManager]


@dataclass(frozen=True)
class Variant:
    """One way to run a model: a backend, its mode (torch: eager or CUDA graph; OpenVINO: its performance hint;
    ncnn: "unpacked" turns its packing layout off) and the precision it computes in (OpenVINO: "fp32" sets the f32
    hint, "default" keeps the device's own; ncnn: fp16 storage and arithmetic, or bf16 storage)."""

    backend: str
    mode: str = ""
    precision: str = "fp32"

    @property
    def label(self) -> str:
        return variant_label(self.backend, self.mode, self.precision)


VARIANTS = {
    "cpu": (Variant("torch", "eager"), Variant("onnxruntime"), Variant("openvino", "latency"),
            Variant("openvino", "throughput"), Variant("ncnn"), Variant("ncnn", "unpacked"),
            Variant("ncnn", precision="fp16"), Variant("ncnn", precision="bf16"), Variant("opencv")),
    "cuda": (Variant("torch", "eager"), Variant("torch", "cuda-graph"), Variant("torch", "eager", "fp16"),
             Variant("torch", "cuda-graph", "fp16"), Variant("tensorrt", precision="fp16")),
}


def unavailable(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot run on ``device`` here, or None."""
    if backend not in {v.backend for v in VARIANTS[device]}:
        return f"{backend} does not run on --device {device} in attn-deploy"
    if backend == "tensorrt":
        from ..exporters import tensorrt

        return tensorrt.missing()
    if backend == "ncnn":
        from ..exporters import ncnn

        return ncnn.missing()
    if backend == "opencv":
        from ..exporters import opencv

        return opencv.missing()
    if device == "cuda":
        import torch

        return None if torch.cuda.is_available() else "torch sees no CUDA device here"
    return None


def choose_variants(device: str, backends: list[str] | None) -> tuple[list[Variant], list[str]]:
    """The variants to run, and why each default backend left out is not run. A backend asked for by name that
    cannot run is an error."""
    asked = [BACKENDS[b] for b in backends] if backends else list(dict.fromkeys(
        v.backend for v in VARIANTS[device] if v.backend not in OPT_IN))
    reasons = {b: unavailable(b, device) for b in asked}
    if backends and any(reasons.values()):
        raise AttnDeployError("; ".join(f"--backend {b}: {r}" for b, r in reasons.items() if r))
    chosen = [v for v in VARIANTS[device] if v.backend in asked and not reasons[v.backend]]
    if not chosen:
        raise AttnDeployError(f"no backend can run on --device {device} here: "
                              + "; ".join(f"{b}: {r}" for b, r in reasons.items() if r))
    return chosen, [f"{b} not measured: {r}" for b, r in reasons.items() if r]


@dataclass
class Subject:
    """One model to time: its PyTorch module (None for an artefact given alone), its artefact per backend and the
    batches it is timed at."""

    name: str
    imgsz: tuple[int, int]
    model: nn.Module | None = None
    artefacts: dict[str, Path] = field(default_factory=dict)
    batches: list[int] = field(default_factory=lambda: [1])
    params: int | None = None
    gflops: float | None = None  # per image
    blocks: list[str] = field(default_factory=list)  # the attention blocks (``model.10``), for the profiles
    channels: int = 3

    def file_mb(self, backend: str) -> float | None:
        path = self.artefacts.get(backend)
        if path is None:
            return None
        return sum(f.stat().st_size for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file()) / 2**20


def count_flops(model: nn.Module, x) -> float:
    """GFLOPs of one forward pass (multiply and add counted apart), by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the counter cannot see inside the fused MHA kernel
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops() / 1e9


def describe(subject: Subject) -> Subject:
    """Fill in parameters and GFLOPs from the PyTorch module."""
    import torch

    x = torch.from_numpy(seeded_input(1, subject.imgsz, subject.channels))
    subject.params = sum(p.numel() for p in subject.model.parameters())
    subject.gflops = count_flops(subject.model, x)
    return subject


def attention_blocks(model: nn.Module) -> list[str]:
    """The YOLO blocks (``model.10``) that hold a zoo attention module."""
    from ..models import ZOO

    zoo_types = tuple({e.module for e in ZOO.values()})
    paths = [name for name, m in model.named_modules() if isinstance(m, zoo_types)]
    return list(dict.fromkeys(".".join(p.split(".")[:2]) for p in paths))


@dataclass
class ModelProfile:
    """One model's per-op profile on one backend, with the time inside its attention blocks."""

    model: str
    backend: str
    batch: int
    profile: OpProfile
    attention_blocks: list[str]
    attention_ms: float
    attention_share: float


@dataclass
class BenchReport:
    device: str
    budget: Budget
    threads: int | None
    results: list[BenchResult] = field(default_factory=list)
    profiles: list[ModelProfile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    trust: list = field(default_factory=list)

    @property
    def noisy_results(self) -> list[BenchResult]:
        return [r for r in self.results if r.latency_ms.noisy]


@dataclass
class Plan:
    device: str = "cpu"
    variants: list[Variant] = field(default_factory=list)
    batches: list[int] | None = None  # None: each model's own (``BATCHES``, or a static export's batch)
    threads: int | None = None
    budget: Budget = field(default_factory=Budget)
    profile: bool = True
    profile_runs: int = 10


def open_variant(subject: Subject, variant: Variant, batch: int, plan: Plan, profiling: bool = False,
                 spinning: bool = True):
    """A runner for ``subject`` as ``variant`` runs it on ``plan.device``, at ``batch``. ``spinning=False`` for
    onnxruntime sessions that are timed in turn with other live runners."""
    from ..exporters import ncnn, onnx, opencv, open_runner, openvino, tensorrt
    from ..exporters import torch as torch_backend

    if variant.backend == "torch" and plan.device == "cpu":
        return torch_backend.Runner(subject.model, threads=plan.threads)
    if variant.backend == "torch":
        return torch_backend.CudaRunner(subject.model, variant.precision, variant.mode == "cuda-graph")
    path = subject.artefacts[SHARES.get(variant.backend, variant.backend)]
    if variant.backend == "opencv":
        return opencv.Runner(path, plan.threads)
    if variant.backend == "onnxruntime":
        return onnx.Runner(path, plan.threads, profiling, spinning)
    if variant.backend == "openvino":
        return openvino.Runner(path, precision=None if variant.precision == "default" else "fp32",
                               threads=plan.threads, mode=variant.mode or "latency", batch=batch, profiling=profiling)
    if variant.backend == "ncnn":
        return ncnn.Runner(path, plan.threads, ncnn.NcnnSettings(variant.precision, variant.mode != "unpacked"))
    if variant.backend == "rknn":
        return open_runner(path)
    return tensorrt.Runner(path)


def runnable(subject: Subject, variant: Variant) -> bool:
    if variant.backend == "torch":
        return subject.model is not None
    return SHARES.get(variant.backend, variant.backend) in subject.artefacts


def time_variant(subject: Subject, variant: Variant, batch: int, plan: Plan,
                 progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Open, time and close one runner; session time and peak memory are measured around it."""
    reset_peak_rss()
    start = time.perf_counter()
    runner = open_variant(subject, variant, batch, plan)
    session_ms = (time.perf_counter() - start) * 1e3
    try:
        result = bench(runner, subject.name, batch, subject.imgsz, plan.budget, plan.threads, progress,
                       subject.channels)
    finally:
        runner.close()
    source = "checkpoint" if variant.backend == "torch" else variant.backend
    return dataclasses.replace(result, session_ms=session_ms, peak_rss_mb=peak_rss_mb(),
                               model_info={"file_mb": subject.file_mb(source), "params": subject.params,
                                           "gflops": subject.gflops})


def median_ms(subject: Subject) -> Callable[[str, "Plan"], float]:
    """The harness's median latency of ``subject`` on a CPU backend under a plan, at its first batch (for the trust
    checks)."""
    def timed(backend: str, plan: Plan) -> float:
        variant = Variant(backend, "latency" if backend == "openvino" else "")
        return time_variant(subject, variant, subject.batches[0], plan).latency_ms.median

    return timed


def profile_subject(subject: Subject, backend: str, batch: int, plan: Plan, runs: int = 10) -> ModelProfile:
    """The per-op profile of ``subject`` on ``backend`` (onnxruntime or OpenVINO in its latency mode)."""
    runner = open_variant(subject, Variant(backend, "latency" if backend == "openvino" else ""), batch, plan,
                          profiling=True)
    try:
        found = profile(runner, seeded_input(batch, subject.imgsz, subject.channels), runs)
    finally:
        runner.close()
    ms, share = found.inside(subject.blocks)
    return ModelProfile(subject.name, backend, batch, found, subject.blocks, ms, share)


def jobs(subjects: list[Subject], plan: Plan) -> list[tuple[Subject, Variant, int]]:
    return [(s, v, b) for s in subjects for v in plan.variants for b in s.batches if runnable(s, v)]


def to_profile(subjects: list[Subject], plan: Plan) -> list[tuple[Subject, str]]:
    """(subject, backend) for each profiled backend that ``plan`` runs and the subject has an artefact for."""
    return [(s, b) for s in subjects for b in PROFILED if plan.profile and b in s.artefacts
            and any(v.backend == b for v in plan.variants)]


def as_job(subject: Subject, variant: Variant, batch: int, plan: Plan) -> Job | None:
    """The timing job of (subject, variant, batch), or None where its runtime has no file to travel (a model built
    in memory, timed in torch)."""
    source = subject.artefacts.get("checkpoint" if variant.backend == "torch" else variant.backend)
    if source is None:
        return None
    return Job(subject.name, variant.backend, str(source), str(subject.artefacts.get("checkpoint", "")),
               subject.imgsz, Settings(plan.threads, variant.mode, variant.precision, plan.device), plan.budget,
               batch=batch, check=False, channels=subject.channels)


def on_cluster(todo: list[tuple[Subject, Variant, int]], plan: Plan, report: BenchReport, cluster,
               progress: Progress | None) -> list[tuple[Subject, Variant, int]]:
    """Time on ``cluster`` the units whose files can travel (their rows name the node); a unit that failed there
    gets a note saying what happened and where. Returns the units left to time here."""
    units = [(unit, as_job(*unit, plan)) for unit in todo]
    sent = [(unit, job) for unit, job in units if job]
    for (subject, variant, batch), result in zip([u for u, _ in sent], cluster.run([j for _, j in sent], progress)):
        if result.error:
            report.notes.append(f"{subject.name} · {variant.label} · batch {batch} on {result.node or 'no node'} "
                                f"({result.device or '-'}): {result.error}")
            continue
        source = "checkpoint" if variant.backend == "torch" else variant.backend
        report.results.append(dataclasses.replace(
            result.timing, mode=variant.mode, node=result.node,
            model_info={"file_mb": subject.file_mb(source), "params": subject.params, "gflops": subject.gflops}))
    return [unit for unit, job in units if job is None]


def run(subjects: list[Subject], plan: Plan, report: BenchReport, progress: Progress | None = None,
        cluster=None) -> BenchReport:
    """Time every runnable (subject, variant, batch), on ``cluster`` where one is given, then profile each subject
    on the profiled backends (here)."""
    todo = jobs(subjects, plan)
    if cluster is not None:
        todo = on_cluster(todo, plan, report, cluster, progress)
    profiled = to_profile(subjects, plan)
    total = len(todo) + len(profiled)
    for i, (subject, variant, batch) in enumerate(todo):
        what = f"{subject.name} · {variant.label} · batch {batch}"
        tick = (lambda done, n, what=what, i=i: progress(f"{what}: run {done}/{n}", i, total)) if progress else None
        report.results.append(time_variant(subject, variant, batch, plan, tick))
    for j, (subject, backend) in enumerate(profiled):
        if progress:
            progress(f"{subject.name} · profiling {backend}", len(todo) + j, total)
        report.profiles.append(profile_subject(subject, backend, subject.batches[0], plan, plan.profile_runs))
    if progress:
        progress("done", total, total)
    if report.noisy_results:
        report.notes.append(f"{len(report.noisy_results)} of {len(report.results)} timings were noisy: the 95 % "
                            "interval of the median reaches more than 5 % from it; close other work and run again")
    return report


def _batch_options(batches: list[int]) -> tuple[int, bool]:
    """One export serves every batch: static at a single batch, else with a dynamic batch axis."""
    return (batches[0], False) if len(batches) == 1 else (1, True)


def from_checkpoint(loaded, plan: Plan, imgsz: tuple[int, int], workdir: Path, step: Step) -> tuple[Subject, list[str]]:
    """A checkpoint's subject, exported on the fly by the deploy pipeline (so each export is parity-checked) to
    the backends that ``plan`` runs besides torch."""
    from .. import pipeline
    from ..exporters import ncnn, onnx, openvino, tensorrt

    batches = plan.batches or BATCHES
    if any(v.backend == "ncnn" for v in plan.variants) and batches != [1]:
        raise AttnDeployError("--backend ncnn takes one image at a time (ncnn has no batch axis): pass --batch 1")
    loaded.check_input(imgsz, max(batches))
    subject = describe(Subject(loaded.source.stem, imgsz, loaded.model, {"checkpoint": loaded.source},
                               blocks=attention_blocks(loaded.model), batches=batches))
    backends = {v.backend for v in plan.variants} - {"torch"}
    if not backends:
        return subject, []
    batch, dynamic = _batch_options(batches)
    output = workdir / f"{subject.name}.onnx"
    targets = [t for t, b in (("openvino", "openvino"), ("trt", "tensorrt"), ("ncnn", "ncnn")) if b in backends]
    deploy = pipeline.Plan(targets, output, onnx.OnnxOptions(imgsz, batch, dynamic, force=True), half="trt" in targets,
                           trt=tensorrt.TensorRTOptions(max_batch=max(batches)))
    run = pipeline.deploy(loaded, deploy, step)
    subject.artefacts.update({"onnxruntime": output, "openvino": openvino.model_dir(output),
                              "tensorrt": output.with_suffix(".engine"), "ncnn": ncnn.model_dir(output)})
    subject.artefacts = {k: v for k, v in subject.artefacts.items() if v.exists()}
    return subject, [f"{subject.name}: the export for {p.backend} ({p.precision}) "
                     f"{'passed' if p.passed else 'FAILED'} parity against PyTorch" for p in run.parity if p.gating]


def _onnx_params(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def from_artefact(path: Path, plan: Plan, imgsz: tuple[int, int] | None, workdir: Path,
                  step: Step) -> tuple[Subject, list[str]]:
    """An exported file's subject: run by its own backend, and an ONNX file also converted for OpenVINO and
    built for TensorRT when ``plan`` runs them. Without batches in ``plan``, a static file runs at its own batch."""
    from ..exporters import backend_of, input_geometry, open_runner, openvino, tensorrt

    runner = open_runner(path)
    static_batch, own = input_geometry(runner)
    dynamic = not isinstance(runner.input_shape[0], int)
    runner.close()
    if imgsz and tuple(imgsz) != own:
        raise AttnDeployError(f"{path} takes {own[0]}x{own[1]} images; --imgsz {imgsz[0]},{imgsz[1]} differs")
    if not dynamic and plan.batches not in (None, [static_batch]):
        raise AttnDeployError(f"{path} has a static batch of {static_batch}; pass --batch {static_batch} (or no "
                              "--batch), or export with --dynamic")
    batches = plan.batches or (BATCHES if dynamic else [static_batch])
    kind = backend_of(path)
    name = path.stem if path.is_file() else path.name.removesuffix("_openvino_model").removesuffix("_ncnn_model")
    subject = Subject(name, own, artefacts={ARTEFACT_BACKEND[kind]: path}, batches=batches)
    notes = [] if kind != "onnx" else [f"{name}: exported file, parameters counted from its initializers; no GFLOPs "
                                       "without the checkpoint"]
    if kind == "onnx":
        subject.params = _onnx_params(path)
        wanted = {v.backend for v in plan.variants}
        if "openvino" in wanted:
            with step(f"Converting {path.name} to OpenVINO IR"):
                subject.artefacts["openvino"] = openvino.export(path, workdir / f"{name}_openvino_model",
                                                                openvino.OpenVINOOptions()).path
        if "tensorrt" in wanted:
            # TensorRT 11 is strongly typed: an fp32 ONNX builds an fp32 engine
            precision = "fp32" if tensorrt.strongly_typed() else "fp16"
            options = tensorrt.TensorRTOptions(precision, dynamic=dynamic, max_batch=max(batches))
            with step(f"Building a TensorRT engine from {path.name}"):
                built = tensorrt.export(path, workdir / f"{name}.engine", options, {})
            subject.artefacts["tensorrt"] = built.path
    return subject, notes


def skipped(subjects: list[Subject], plan: Plan) -> list[str]:
    return [f"{s.name}: {v.label} not run: " + ("torch needs the checkpoint" if v.backend == "torch" else
                                                 f"there is no {v.backend} artefact of it")
            for s in subjects for v in plan.variants if not runnable(s, v)]


def prepare(paths: list[Path], plan: Plan, imgsz: tuple[int, int] | None, workdir: Path, step: Step,
            load: Callable[[Path], object]) -> tuple[list[Subject], list[str]]:
    """A subject per model path: checkpoints (``.pt``, loaded by ``load``) are exported on the fly into ``workdir``."""
    subjects, notes = [], []
    for path in paths:
        if path.suffix == ".pt":
            loaded = load(path)
            subject, said = from_checkpoint(loaded, plan, imgsz or loaded.imgsz or (640, 640), workdir, step)
        else:
            subject, said = from_artefact(path, plan, imgsz, workdir, step)
        subjects.append(subject)
        notes += said
    names = [s.name for s in subjects]
    if len(set(names)) < len(names):
        raise AttnDeployError(f"two models share a name ({', '.join(names)}); rename one so their rows differ")
    return subjects, notes + skipped(subjects, plan)


def bench_models(paths: list[Path], plan: Plan, imgsz: tuple[int, int] | None, notes: list[str], trust: bool,
                 load: Callable[[Path], object], step: Step, progress: Progress | None = None,
                 cluster=None) -> BenchReport:
    """The bench command: prepare every model, time and profile it, and with ``trust`` check the harness against
    benchmark_app and a plain onnxruntime loop on the first model."""
    from . import trust as trust_checks
    from ..machine import machine

    report = BenchReport(plan.device, plan.budget, plan.threads, notes=list(notes), machine=machine(plan.threads))
    with tempfile.TemporaryDirectory() as tmp:
        subjects, said = prepare(paths, plan, imgsz, Path(tmp), step, load)
        report.notes += said
        run(subjects, plan, report, progress, cluster)
        if trust:
            with step("Checking the harness against benchmark_app and a plain onnxruntime loop"):
                report.trust = trust_checks.check(subjects[0], plan, median_ms(subjects[0]))
    return report
